"""Short name for ``configs/vp/cifar10_ddpmpp_continuous.py``: DDPM++ cont. with the VP SDE
(Song et al. 2021: FID 2.55, IS 9.58; NLL 3.16 bits/dim; 61,804,419 parameters).

    python main.py --config configs/vp/cifar10.py --workdir W --mode train
"""

from configs.vp.cifar10_ddpmpp_continuous import get_config  # noqa: F401
