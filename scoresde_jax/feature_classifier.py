"""``python -m scoresde_jax.feature_classifier``: see ``cli.feature_classifier_cli``."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from scoresde_jax.cli import feature_classifier_cli  # noqa: E402

if __name__ == "__main__":
    feature_classifier_cli()
