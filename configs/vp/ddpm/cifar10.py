"""DDPM (Ho et al. 2020) on CIFAR-10: the DDPM network, discrete objective (1000 steps of the VP
SDE), ancestral sampling.

    python main.py --config configs/vp/ddpm/cifar10.py --workdir W --mode train

Song et al. 2021: FID 3.24 with 1000 ancestral-sampling steps (Table 1); NLL 3.28 bits/dim and
FID 3.37 with the probability-flow ODE (Table 2). Ho et al. report FID 3.17. 35,218,947 parameters.
"""

from configs import common


def get_config():
    config = common.image_defaults()
    config.training.sde = "vpsde"
    config.training.continuous = False
    config.training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "ancestral_sampling"
    sampling.corrector = "none"

    config.data.centered = True

    model = config.model
    common.ddpm(model)
    model.scale_by_sigma = False
    model.ema_rate = 0.9999
    return config
