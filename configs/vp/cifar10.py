"""Short name for ``configs/vp/cifar10_ddpmpp_continuous.py`` (DDPM++ continuous, VP SDE)."""

from configs.vp.cifar10_ddpmpp_continuous import get_config  # noqa: F401
