"""2-D Gaussian mixture with the VE SDE (SMLD family): NCSN-style sigma-scaled MLP, PC sampler.

python main.py --config configs/toy/gmm_ve.py --mode train --workdir runs/toy_gmm_ve
python main.py --config configs/toy/gmm_ve.py --mode eval --workdir runs/toy_gmm_ve
"""

from configs.toy.default import get_default_config


def get_config():
    config = get_default_config()
    config.data.dataset = "gmm"
    config.training.sde = "vesde"
    # VE networks see the noise level sigma; Fourier features of log(sigma) and an output divided
    # by sigma give the score its 1/sigma scale, as NCSN++ does.
    config.model.embedding = "fourier"
    config.model.scale_by_sigma = True
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    config.sampling.snr = 0.16
    return config
