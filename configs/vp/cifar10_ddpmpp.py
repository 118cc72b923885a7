"""DDPM++ on CIFAR-10 with the discrete DDPM objective (1000 steps of the VP SDE).

    python main.py --config configs/vp/cifar10_ddpmpp.py --workdir W --mode train

Song et al. 2021, Table 3 ("DDPM++"): FID 2.78, IS 9.64 (ancestral sampling).
61,804,419 parameters.
"""

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_continuous_config


def get_config():
    config = get_continuous_config()
    config.training.continuous = False
    config.sampling.predictor = "ancestral_sampling"
    return config
