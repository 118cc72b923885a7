"""DDPM++ cont. (sub-VP SDE) on CIFAR-10: ``vp/cifar10_ddpmpp_continuous.py`` with the sub-VP SDE.

    python main.py --config configs/subvp/cifar10_ddpmpp_continuous.py --workdir W --mode train

Song et al. 2021: FID 2.61, IS 9.56 (Table 3; Euler-Maruyama predictor); NLL 3.02 bits/dim and
FID 3.16 with the probability-flow ODE (Table 2). 61,804,419 parameters.
"""

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_vp_config


def get_config():
    config = get_vp_config()
    config.training.sde = "subvpsde"
    return config
