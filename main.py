"""Command line: ``python main.py --config CONFIG --workdir DIR --mode MODE``.

Modes: train, eval, sample (also inpainting, colorization and class-conditional sampling through
``--config.sampling.task``), stats, train_classifier, encode, interpolate, temperature and
toy_figures; ``--help`` lists them. Any config field can be overridden, e.g.
``--config.training.n_iters=2000``. See :mod:`scoresde_jax.cli` for the checks made before any
work starts and the exit statuses.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from scoresde_jax.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
