"""One module per command of ``main.py`` (see :data:`scoresde_jax.cli.MODES`)."""
