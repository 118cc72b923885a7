"""DDPM cont. (VP SDE) on CIFAR-10: the DDPM network trained with the continuous-time objective.

    python main.py --config configs/vp/ddpm/cifar10_continuous.py --workdir W --mode train

Song et al. 2021, Table 2: NLL 3.21 bits/dim, FID 3.69 with the probability-flow ODE.
35,218,947 parameters.
"""

from configs.vp.ddpm.cifar10 import get_config as get_discrete_config


def get_config():
    config = get_discrete_config()
    config.training.continuous = True
    config.sampling.predictor = "euler_maruyama"
    return config
