"""NCSNv2 (Song & Ermon 2020) on LSUN bedroom 128x128: the 128-pixel NCSNv2 network, 1086 noise
levels from 190 to 0.01, annealed Langevin dynamics (3 steps per level, snr 0.095), batch 128,
EMA 0.9999, Adam at 1e-4.

    python main.py --config configs/ve/ncsnv2/bedroom.py --workdir W --mode train

Paper result: — . 83,445,379 parameters. The original file misspelt ``training.continuous`` and so
left it at True; NCSNv2 indexes its noise levels, so it is set to False here.
"""

from configs import common
from configs.default_lsun import get_default_configs


def get_config():
    config = get_default_configs()
    common.ncsn(config, "ncsnv2_128", lr=1e-4)
    config.training.batch_size = 128

    sampling = config.sampling
    sampling.n_steps_each = 3
    sampling.snr = 0.095

    data = config.data
    data.category = "bedroom"
    data.image_size = 128

    model = config.model
    model.scale_by_sigma = True
    model.sigma_min = 0.01
    model.sigma_max = 190.0
    model.num_scales = 1086
    model.ema_rate = 0.9999
    return config
