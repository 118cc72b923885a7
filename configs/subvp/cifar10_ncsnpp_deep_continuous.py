"""NCSN++ cont. (deep) with the sub-VP SDE on CIFAR-10: 8 residual blocks per resolution, 950k
iterations.

    python main.py --config configs/subvp/cifar10_ncsnpp_deep_continuous.py --workdir W --mode train

Paper result: — . 107,521,411 parameters.
"""

from configs.vp.cifar10_ncsnpp_deep_continuous import get_config as get_vp_config


def get_config():
    config = get_vp_config()
    config.training.sde = "subvpsde"
    return config
