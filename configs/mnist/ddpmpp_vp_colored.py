"""DDPM++ (small) with the VP SDE on colored MNIST: every digit in one saturated color, so that
colorization of grayscale digits has something to recover (MNIST itself is grayscale).

    python main.py --config configs/mnist/ddpmpp_vp_colored.py --workdir runs/mnist_color \
        --mode train --config.data.path=/path/to/mnist_idx_dir
    python main.py --config configs/mnist/ddpmpp_vp_colored.py --workdir runs/mnist_color \
        --mode sample --config.data.path=/path/to/mnist_idx_dir --config.sampling.task=colorize

The colors are a deterministic function of the example index (see
``scoresde_jax.data.TintedSource``); README.md (Controllable generation) shows the result.
"""

from configs.mnist.default import get_default_configs


def get_config():
    config = get_default_configs()
    config.training.sde = "vpsde"
    config.data.dataset = "colored_mnist"
    config.data.num_channels = 3
    config.sampling.predictor = "euler_maruyama"
    config.sampling.corrector = "none"
    return config
