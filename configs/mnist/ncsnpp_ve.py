"""NCSN++ (small) with the VE SDE on MNIST, sampled with the reverse-diffusion predictor and a
Langevin corrector.

    python main.py --config configs/mnist/ncsnpp_ve.py --workdir runs/mnist_ve --mode train \
        --config.data.path=/path/to/mnist_idx_dir
"""

from configs.mnist.default import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vesde"
    config.training.reduce_mean = False
    config.data.centered = False
    # At least the largest distance between two MNIST images in [0, 1] (at most sqrt(784) = 28).
    config.model.sigma_max = 30.0
    config.model.scale_by_sigma = True
    config.model.embedding_type = "fourier"
    config.model.fir = True
    config.model.progressive_input = "residual"
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    config.sampling.snr = 0.16
    return config
