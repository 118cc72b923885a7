"""The DDPM network (Ho et al. 2020) trained with the discrete SMLD objective (VE SDE) on
CIFAR-10: the VE counterpart of ``vp/ddpm/cifar10.py``.

    python main.py --config configs/ve/cifar10_ddpm.py --workdir W --mode train

Paper result: — (no number for this configuration on its own). 35,218,947 parameters (the DDPM
network; its output is divided by sigma).
"""

from configs import common


def get_config():
    config = common.image_defaults()
    config.training.sde = "vesde"
    config.training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.eps = 1e-5

    model = config.model
    common.ddpm(model)
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.conv_size = 3
    return config
