"""NCSNv2 (Song & Ermon 2020) on CelebA 64x64: 500 noise levels from 90 to 0.01, annealed
Langevin dynamics (5 steps per level, snr 0.128), EMA 0.999, Adam at 1e-4.

    python main.py --config configs/ve/ncsnv2/celeba.py --workdir W --mode train

Paper result: — . 29,694,083 parameters.
"""

from configs import common
from configs.default_celeba import get_default_configs


def get_config():
    config = get_default_configs()
    common.ncsn(config, "ncsnv2_64", lr=1e-4)

    sampling = config.sampling
    sampling.n_steps_each = 5
    sampling.snr = 0.128

    model = config.model
    model.scale_by_sigma = True
    model.num_scales = 500
    model.ema_rate = 0.999
    return config
