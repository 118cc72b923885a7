"""NCSN++ cont. (VE SDE) on CIFAR-10: NCSN++ trained with the continuous-time objective.

    python main.py --config configs/ve/cifar10_ncsnpp_continuous.py --workdir W --mode train

Song et al. 2021, Table 3: FID 2.38, IS 9.83 (PC sampler: reverse diffusion + Langevin,
snr 0.16, 1000 steps; best snapshot). 62,758,915 parameters.

NCSN++: FIR up/downsampling, BigGAN residual blocks with rescaled skips, a residual
input pyramid and random Fourier features of the noise level; the output is divided by sigma.
"""

from configs import common


def get_config():
    config = common.image_defaults()
    config.training.sde = "vesde"
    config.training.continuous = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.eps = 1e-5  # the original sampled VE models down to t = 1e-5

    model = config.model
    common.ncsnpp(model)
    model.scale_by_sigma = True
    model.ema_rate = 0.999
    return config
