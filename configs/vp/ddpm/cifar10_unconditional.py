"""DDPM on CIFAR-10 without the time embedding: the network is not told the noise level
(technique 3 of NCSNv2, Song & Ermon 2020, tried on DDPM).

    python main.py --config configs/vp/ddpm/cifar10_unconditional.py --workdir W --mode train

Paper result: — . 32,329,347 parameters (the DDPM network less its time-embedding layers).
"""

from configs.vp.ddpm.cifar10 import get_config as get_conditional_config


def get_config():
    config = get_conditional_config()
    config.model.conditional = False
    return config
