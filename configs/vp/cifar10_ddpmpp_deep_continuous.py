"""DDPM++ cont. (deep): 8 residual blocks per resolution, VP SDE, CIFAR-10 (Song et al. 2021,
Tables 2-3).

    python main.py --config configs/vp/cifar10_ddpmpp_deep_continuous.py --mode train --workdir W
"""

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_base


def get_config():
    config = get_base()
    config.model.num_res_blocks = 8
    return config
