"""NCSN++ on CIFAR-10 with the discrete DDPM objective (1000 steps of the VP SDE).

    python main.py --config configs/vp/cifar10_ncsnpp.py --workdir W --mode train

Paper result: — . 62,693,251 parameters. Sampled, as in the paper's config, with the
reverse-diffusion predictor and no corrector.
"""

from configs.vp.cifar10_ncsnpp_continuous import get_config as get_continuous_config


def get_config():
    config = get_continuous_config()
    config.training.continuous = False
    config.sampling.predictor = "reverse_diffusion"
    return config
