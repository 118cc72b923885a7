"""NCSN++ cont. (VE SDE) on LSUN church_outdoor 256x256: 2,000 noise scales up to
sigma_max = 380, batch 64, 2.4M iterations.

    python main.py --config configs/ve/church_ncsnpp_continuous.py --workdir W --mode train

Paper result: — (samples only). 65,574,549 parameters.

The 256-pixel NCSN++: seven resolutions (256 down to 4), two residual blocks each, an
output-skip pyramid and input-skip pyramid, Fourier features of sigma, no dropout.
"""

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
    model.name = "ncsnpp"
    model.sigma_max = 380.0
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "output_skip"
    model.progressive_input = "input_skip"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.embedding_type = "fourier"
    model.init_scale = 0.0
    model.fourier_scale = 16
    model.conv_size = 3
    return config
