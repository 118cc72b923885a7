"""Short name for ``configs/subvp/cifar10_ddpmpp_continuous.py``: DDPM++ cont. with the sub-VP
SDE (Song et al. 2021: FID 2.61, IS 9.56; NLL 3.02 bits/dim; 61,804,419 parameters).

    python main.py --config configs/subvp/cifar10.py --workdir W --mode train
"""

from configs.subvp.cifar10_ddpmpp_continuous import get_config  # noqa: F401
