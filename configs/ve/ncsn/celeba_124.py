"""NCSN on CelebA 64x64 with NCSNv2's techniques 1, 2 and 4: 500 noise levels from
sigma_max = 90 to 0.01, and 5 Langevin steps per level at snr 0.128. No EMA.

    python main.py --config configs/ve/ncsn/celeba_124.py --workdir W --mode train

Paper result: — . 51,379,715 parameters.
"""

from configs.ve.ncsn.celeba import get_config as get_ncsn_config


def get_config():
    config = get_ncsn_config()
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.128
    config.model.sigma_max = 90.0
    config.model.num_scales = 500
    return config
