"""NCSN (Song & Ermon 2019) on CelebA 64x64: 10 noise levels from 1 to 0.01, annealed Langevin
dynamics (100 steps per level); no EMA, no gradient clipping, Adam at 1e-3.

    python main.py --config configs/ve/ncsn/celeba.py --workdir W --mode train

Paper result: — . 30,117,635 parameters. The variants ``celeba_5``, ``celeba_124`` and
``celeba_1245`` add NCSNv2 techniques as for CIFAR-10 (500 levels from sigma_max = 90,
5 steps per level at snr 0.128).
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
    sampling.n_steps_each = 100
    sampling.snr = 0.316
    sampling.eps = 1e-5

    model = config.model
    model.name = "ncsn"
    model.scale_by_sigma = False
    model.sigma_max = 1.0
    model.num_scales = 10
    model.ema_rate = 0.0
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.optimizer = "adam"
    optim.lr = 1e-3
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 0
    optim.grad_clip = -1.0  # no clipping
    return config
