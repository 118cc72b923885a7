"""DDPM++ (small) with the VP SDE on MNIST: recognizable digits after a CPU run.

    python main.py --config configs/mnist/ddpmpp_vp.py --workdir runs/mnist_vp --mode train \
        --config.data.path=/path/to/mnist_idx_dir
    python main.py --config configs/mnist/ddpmpp_vp.py --workdir runs/mnist_vp --mode sample

See README.md (MNIST) for the time per step and the bits/dim it reaches.
"""

from configs.mnist.default import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    config.sampling.predictor = "euler_maruyama"
    config.sampling.corrector = "none"
    return config
