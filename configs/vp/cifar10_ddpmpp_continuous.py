"""DDPM++ cont. (VP SDE) on CIFAR-10: DDPM++ trained with the continuous-time objective.

    python main.py --config configs/vp/cifar10_ddpmpp_continuous.py --workdir W --mode train

Song et al. 2021: FID 2.55, IS 9.58 (Table 3; PC sampler, Euler-Maruyama predictor, no
corrector); NLL 3.16 bits/dim and FID 3.93 with the probability-flow ODE (Table 2; last
snapshot). 61,804,419 parameters.

DDPM++: BigGAN residual blocks with rescaled skips and sinusoidal time embeddings, plain
(non-FIR) resampling, no input pyramid; data in [-1, 1].
"""

from configs import common


def get_config():
    config = common.image_defaults()
    config.training.sde = "vpsde"
    config.training.continuous = True
    config.training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"

    config.data.centered = True

    model = config.model
    common.ncsnpp(model)
    model.scale_by_sigma = False
    model.ema_rate = 0.9999
    model.fir = False
    model.progressive_input = "none"
    model.embedding_type = "positional"
    return config
