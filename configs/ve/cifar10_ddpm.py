"""The DDPM network (Ho et al. 2020) trained with the discrete SMLD objective (VE SDE) on
CIFAR-10: the VE counterpart of ``vp/ddpm/cifar10.py``.

    python main.py --config configs/ve/cifar10_ddpm.py --workdir W --mode train

Paper result: — (no number for this configuration on its own). 35,218,947 parameters (the DDPM
network; its output is divided by sigma).
"""

from configs.common import image_defaults


def get_config():
    config = image_defaults()
    config.training.sde = "vesde"
    config.training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.eps = 1e-5

    model = config.model
    model.name = "ddpm"
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.conv_size = 3
    return config
