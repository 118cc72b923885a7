"""``python -m scoresde_jax.convert``: a checkpoint of the paper's official code (PyTorch or
Flax) becomes this package's training state; ``--help`` says how. The conversion itself is
:func:`scoresde_jax.modes.convert.convert_checkpoint`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from scoresde_jax.cli import convert_cli  # noqa: E402

if __name__ == "__main__":
    convert_cli()
