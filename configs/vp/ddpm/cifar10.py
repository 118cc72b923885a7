"""DDPM (Ho et al. 2020) on CIFAR-10: the DDPM network, discrete objective (1000 steps of the VP
SDE), ancestral sampling.

    python main.py --config configs/vp/ddpm/cifar10.py --workdir W --mode train

Song et al. 2021: FID 3.24 with 1000 ancestral-sampling steps (Table 1); NLL 3.28 bits/dim and
FID 3.37 with the probability-flow ODE (Table 2). Ho et al. report FID 3.17. 35,218,947 parameters.
"""

from configs.common import image_defaults


def get_config():
    config = image_defaults()
    config.training.sde = "vpsde"
    config.training.continuous = False
    config.training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "ancestral_sampling"
    sampling.corrector = "none"

    config.data.centered = True

    model = config.model
    model.name = "ddpm"
    model.scale_by_sigma = False
    model.ema_rate = 0.9999
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    return config
