"""NCSNv2 (Song & Ermon 2020) on CIFAR-10: 232 noise levels from 50 to 0.01, an unconditional
network whose output is divided by sigma, annealed Langevin dynamics (5 steps per level,
snr 0.176), EMA 0.999, Adam at 1e-4 without warm-up or clipping.

    python main.py --config configs/ve/ncsnv2/cifar10.py --workdir W --mode train

Song et al. 2021, Table 3 quotes NCSNv2 at FID 10.87, IS 8.40 (Song & Ermon 2020).
29,694,083 parameters.
"""

from configs import common


def get_config():
    config = common.image_defaults()
    common.ncsn(config, "ncsnv2_64", lr=1e-4)

    sampling = config.sampling
    sampling.n_steps_each = 5
    sampling.snr = 0.176

    model = config.model
    model.scale_by_sigma = True
    model.num_scales = 232
    model.ema_rate = 0.999
    return config
