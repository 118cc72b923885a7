"""NCSN (Song & Ermon 2019) on CelebA 64x64: 10 noise levels from 1 to 0.01, annealed Langevin
dynamics (100 steps per level); no EMA, no gradient clipping, Adam at 1e-3.

    python main.py --config configs/ve/ncsn/celeba.py --workdir W --mode train

Paper result: — . 30,117,635 parameters. The variants ``celeba_5``, ``celeba_124`` and
``celeba_1245`` add NCSNv2 techniques as for CIFAR-10 (500 levels from sigma_max = 90,
5 steps per level at snr 0.128).
"""

from configs import common
from configs.default_celeba import get_default_configs


def get_config():
    config = get_default_configs()
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
