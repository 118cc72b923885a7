"""NCSNv2 (Song & Ermon 2020) on CIFAR-10: 232 noise levels from 50 to 0.01, an unconditional
network whose output is divided by sigma, annealed Langevin dynamics (5 steps per level,
snr 0.176), EMA 0.999, Adam at 1e-4 without warm-up or clipping.

    python main.py --config configs/ve/ncsnv2/cifar10.py --workdir W --mode train

Song et al. 2021, Table 3 quotes NCSNv2 at FID 10.87, IS 8.40 (Song & Ermon 2020).
29,694,083 parameters.
"""

from configs.common import image_defaults


def get_config():
    config = image_defaults()
    config.training.sde = "vesde"
    config.training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 5
    sampling.snr = 0.176
    sampling.eps = 1e-5

    model = config.model
    model.name = "ncsnv2_64"
    model.scale_by_sigma = True
    model.num_scales = 232
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
