"""NCSN++ cont. (VE SDE) on LSUN church_outdoor 256x256: 2,000 noise scales up to
sigma_max = 380, batch 64, 2.4M iterations.

    python main.py --config configs/ve/church_ncsnpp_continuous.py --workdir W --mode train

Paper result: — (samples only). 65,574,549 parameters.

The 256-pixel NCSN++: seven resolutions (256 down to 4), two residual blocks each, an
output-skip pyramid and input-skip pyramid, Fourier features of sigma, no dropout.
"""

from configs import common
from configs.default_lsun import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vesde"
    config.training.continuous = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.eps = 1e-5

    config.data.category = "church_outdoor"

    model = config.model
    common.ncsnpp(model)
    model.sigma_max = 380.0
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    model.num_res_blocks = 2
    model.progressive = "output_skip"
    model.progressive_input = "input_skip"
    return config
