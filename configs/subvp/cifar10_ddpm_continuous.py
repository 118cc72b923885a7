"""DDPM cont. (sub-VP SDE) on CIFAR-10: the DDPM network, continuous-time objective, sub-VP SDE.

    python main.py --config configs/subvp/cifar10_ddpm_continuous.py --workdir W --mode train

Song et al. 2021, Table 2: NLL 3.05 bits/dim, FID 3.56 with the probability-flow ODE.
35,218,947 parameters.
"""

from configs.vp.ddpm.cifar10_continuous import get_config as get_vp_config


def get_config():
    config = get_vp_config()
    config.training.sde = "subvpsde"
    return config
