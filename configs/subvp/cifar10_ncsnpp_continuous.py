"""NCSN++ cont. with the sub-VP SDE on CIFAR-10: ``vp/cifar10_ncsnpp_continuous.py`` with the
sub-VP SDE.

    python main.py --config configs/subvp/cifar10_ncsnpp_continuous.py --workdir W --mode train

Paper result: — . 62,693,251 parameters.
"""

from configs.vp.cifar10_ncsnpp_continuous import get_config as get_vp_config


def get_config():
    config = get_vp_config()
    config.training.sde = "subvpsde"
    return config
