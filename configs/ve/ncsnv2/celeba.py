"""NCSNv2 (Song & Ermon 2020) on CelebA 64x64: 500 noise levels from 90 to 0.01, annealed
Langevin dynamics (5 steps per level, snr 0.128), EMA 0.999, Adam at 1e-4.

    python main.py --config configs/ve/ncsnv2/celeba.py --workdir W --mode train

Paper result: — . 29,694,083 parameters.
"""

from configs.default_celeba import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vesde"
    config.training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 5
    sampling.snr = 0.128
    sampling.eps = 1e-5

    model = config.model
    model.name = "ncsnv2_64"
    model.scale_by_sigma = True
    model.num_scales = 500
    model.ema_rate = 0.999
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.optimizer = "adam"
    optim.lr = 1e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 0
    optim.grad_clip = -1.0  # no clipping
    return config
