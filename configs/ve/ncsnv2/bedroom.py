"""NCSNv2 (Song & Ermon 2020) on LSUN bedroom 128x128: the 128-pixel NCSNv2 network, 1086 noise
levels from 190 to 0.01, annealed Langevin dynamics (3 steps per level, snr 0.095), batch 128,
EMA 0.9999, Adam at 1e-4.

    python main.py --config configs/ve/ncsnv2/bedroom.py --workdir W --mode train

Paper result: — . 83,445,379 parameters. The original file misspelt ``training.continuous`` and so
left it at True; NCSNv2 indexes its noise levels, so it is set to False here.
"""

from configs.default_lsun import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vesde"
    config.training.continuous = False
    config.training.batch_size = 128

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 3
    sampling.snr = 0.095
    sampling.eps = 1e-5

    data = config.data
    data.category = "bedroom"
    data.image_size = 128

    model = config.model
    model.name = "ncsnv2_128"
    model.scale_by_sigma = True
    model.sigma_min = 0.01
    model.sigma_max = 190.0
    model.num_scales = 1086
    model.ema_rate = 0.9999
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.optimizer = "adam"
    optim.lr = 1e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 0
    optim.grad_clip = -1.0  # no clipping
    return config
