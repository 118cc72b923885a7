"""``python -m scoresde_jax.convert``: a checkpoint of the paper's code becomes this package's
training state (:func:`scoresde_jax.modes.convert.convert_checkpoint`); ``--help`` says how."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from scoresde_jax.cli import convert_cli  # noqa: E402

if __name__ == "__main__":
    convert_cli()
