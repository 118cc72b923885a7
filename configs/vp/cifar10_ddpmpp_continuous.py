"""DDPM++ cont. (VP SDE) on CIFAR-10: DDPM++ trained with the continuous-time objective.

    python main.py --config configs/vp/cifar10_ddpmpp_continuous.py --workdir W --mode train

Song et al. 2021: FID 2.55, IS 9.58 (Table 3; PC sampler, Euler-Maruyama predictor, no
corrector); NLL 3.16 bits/dim and FID 3.93 with the probability-flow ODE (Table 2; last
snapshot). 61,804,419 parameters.

DDPM++: BigGAN residual blocks with rescaled skips and sinusoidal time embeddings, plain
(non-FIR) resampling, no input pyramid; data in [-1, 1].
"""

from configs.common import image_defaults


def get_config():
    config = image_defaults()
    config.training.sde = "vpsde"
    config.training.continuous = True
    config.training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"

    config.data.centered = True

    model = config.model
    model.name = "ncsnpp"
    model.scale_by_sigma = False
    model.ema_rate = 0.9999
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = False
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "none"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.embedding_type = "positional"
    model.init_scale = 0.0
    model.fourier_scale = 16
    model.conv_size = 3
    return config
