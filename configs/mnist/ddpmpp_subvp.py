"""DDPM++ (small) with the sub-VP SDE on MNIST.

    python main.py --config configs/mnist/ddpmpp_subvp.py --workdir runs/mnist_subvp --mode train \
        --config.data.path=/path/to/mnist_idx_dir
"""

from configs.mnist.default import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "subvpsde"
    return config
