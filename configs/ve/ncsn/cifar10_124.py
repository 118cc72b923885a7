"""NCSN on CIFAR-10 with NCSNv2's techniques 1, 2 and 4: 232 noise levels from sigma_max = 50
to 0.01, and 5 Langevin steps per level at snr 0.176. No EMA.

    python main.py --config configs/ve/ncsn/cifar10_124.py --workdir W --mode train

Paper result: — . 39,750,659 parameters (the conditional normalizations grow with the number of
noise levels).
"""

from configs.ve.ncsn.cifar10 import get_config as get_ncsn_config


def get_config():
    config = get_ncsn_config()
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.176
    config.model.sigma_max = 50.0
    config.model.num_scales = 232
    return config
