"""Short name for ``configs/vp/ddpm/cifar10.py`` (named like the original's checkpoint folder
``vp/cifar10_ddpm``): DDPM (Ho et al. 2020) with its discrete objective and ancestral sampling
(Song et al. 2021: FID 3.24 with 1000 ancestral steps; NLL 3.28 bits/dim, FID 3.37 with the
probability-flow ODE; 35,218,947 parameters).

    python main.py --config configs/vp/cifar10_ddpm.py --workdir W --mode train
"""

from configs.vp.ddpm.cifar10 import get_config  # noqa: F401
