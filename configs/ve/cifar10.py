"""Short name for ``configs/ve/cifar10_ncsnpp_continuous.py`` (NCSN++ continuous, VE SDE)."""

from configs.ve.cifar10_ncsnpp_continuous import get_config  # noqa: F401
