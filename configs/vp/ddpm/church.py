"""DDPM (Ho et al. 2020) on LSUN church_outdoor 256x256: the 256-pixel DDPM network (channel
multipliers 1, 1, 2, 2, 4, 4), discrete objective, ancestral sampling, Adam at 2e-5.

    python main.py --config configs/vp/ddpm/church.py --workdir W --mode train

Paper result: — . 111,569,923 parameters.
"""

from configs import common
from configs.default_lsun import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    config.training.continuous = False
    config.training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "ancestral_sampling"
    sampling.corrector = "none"

    data = config.data
    data.category = "church_outdoor"
    data.centered = True

    model = config.model
    common.ddpm(model)
    model.scale_by_sigma = False
    model.num_scales = 1000
    model.ema_rate = 0.9999
    model.ch_mult = (1, 1, 2, 2, 4, 4)

    config.optim.lr = 2e-5
    return config
