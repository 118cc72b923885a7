"""NCSN++ on CelebA 64x64 with the discrete SMLD objective (1000 noise levels of the VE SDE,
sigma_max = 90).

    python main.py --config configs/ve/celeba_ncsnpp.py --workdir W --mode train

Paper result: — (CelebA samples only). 62,693,251 parameters.
"""

from configs import common
from configs.default_celeba import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vesde"
    config.training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.eps = 1e-5

    model = config.model
    common.ncsnpp(model)
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.embedding_type = "positional"
    return config
