"""Short name for ``configs/subvp/cifar10_ddpmpp_continuous.py`` (DDPM++ continuous, sub-VP)."""

from configs.subvp.cifar10_ddpmpp_continuous import get_config  # noqa: F401
