"""NCSN (Song & Ermon 2019) on CIFAR-10: RefineNet with conditional instance normalization,
10 noise levels from 1 to 0.01, annealed Langevin dynamics (100 steps per level).

    python main.py --config configs/ve/ncsn/cifar10.py --workdir W --mode train

Song et al. 2021, Table 3 quotes NCSN at FID 25.32, IS 8.87 (Song & Ermon 2019).
30,117,635 parameters. No EMA and no gradient clipping, Adam at 1e-3, as in the original.

The variants ``cifar10_5``, ``cifar10_124`` and ``cifar10_1245`` add the NCSNv2 techniques
(Song & Ermon 2020) named by their digits: 1, 2 the noise levels (232 levels from 50),
4 the Langevin step size (5 steps per level, snr 0.176), 5 the EMA of the weights.
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
