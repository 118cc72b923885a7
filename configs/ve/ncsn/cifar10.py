"""NCSN (Song & Ermon 2019) on CIFAR-10: RefineNet with conditional instance normalization,
10 noise levels from 1 to 0.01, annealed Langevin dynamics (100 steps per level).

    python main.py --config configs/ve/ncsn/cifar10.py --workdir W --mode train

Song et al. 2021, Table 3 quotes NCSN at FID 25.32, IS 8.87 (Song & Ermon 2019).
30,117,635 parameters. No EMA and no gradient clipping, Adam at 1e-3, as in the original.

The variants ``cifar10_5``, ``cifar10_124`` and ``cifar10_1245`` add the NCSNv2 techniques
(Song & Ermon 2020) named by their digits: 1, 2 the noise levels (232 levels from 50),
4 the Langevin step size (5 steps per level, snr 0.176), 5 the EMA of the weights.
"""

from configs import common


def get_config():
    config = common.image_defaults()
    common.ncsn(config, "ncsn", lr=1e-3)

    sampling = config.sampling
    sampling.n_steps_each = 100
    sampling.snr = 0.316

    model = config.model
    model.scale_by_sigma = False
    model.sigma_max = 1.0
    model.num_scales = 10
    model.ema_rate = 0.0
    return config
