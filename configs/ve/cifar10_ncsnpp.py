"""NCSN++ on CIFAR-10 with the discrete SMLD objective (1000 noise levels of the VE SDE).

    python main.py --config configs/ve/cifar10_ncsnpp.py --workdir W --mode train

Song et al. 2021, Table 3 ("NCSN++"): FID 2.45, IS 9.73 (PC sampler: reverse diffusion +
Langevin, snr 0.16). 62,693,251 parameters.

The network of ``ve/cifar10_ncsnpp_continuous.py``, conditioned on the index of the noise level
through sinusoidal (positional) embeddings instead of Fourier features of sigma.
"""

from configs.ve.cifar10_ncsnpp_continuous import get_config as get_continuous_config


def get_config():
    config = get_continuous_config()
    config.training.continuous = False
    config.model.embedding_type = "positional"
    return config
