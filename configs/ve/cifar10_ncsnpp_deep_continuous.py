"""NCSN++ cont. (deep): NCSN++ with 8 residual blocks per resolution, VE SDE, CIFAR-10
(FID 2.20, IS 9.89 in Table 3 of Song et al. 2021).

    python main.py --config configs/ve/cifar10_ncsnpp_deep_continuous.py --mode train --workdir W
"""

from configs.ve.cifar10_ncsnpp_continuous import get_config as get_base


def get_config():
    config = get_base()
    config.model.num_res_blocks = 8
    return config
