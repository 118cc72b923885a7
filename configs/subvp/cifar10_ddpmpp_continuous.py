"""DDPM++ (continuous) with the sub-VP SDE on CIFAR-10 (Song et al. 2021, Tables 2-3; the deep
sub-VP variant reaches 2.99 bits/dim).

    python main.py --config configs/subvp/cifar10_ddpmpp_continuous.py --mode train --workdir W
"""

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_vp_config


def get_config():
    config = get_vp_config()
    config.training.sde = "subvpsde"
    return config
