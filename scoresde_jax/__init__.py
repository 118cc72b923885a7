"""scoresde_jax: score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX.

The package has three layers (see the README's design section): the library (``core``,
``sampling``, ``models``, ``data``, ``metrics``, ``io``), ``run`` (configs to library objects,
the trainer, checkpoints) and ``modes`` (one per command of ``main.py``). The names users need
most are listed here, and the core modules are reachable as ``scoresde_jax.sde``,
``scoresde_jax.likelihood`` and so on. They are imported on first use, so that
``import scoresde_jax`` (and the command line's checks of its arguments) start without loading
JAX.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GaussianMixture": "scoresde_jax.core.gmm",
    "SubVPSDE": "scoresde_jax.core.sde",
    "VESDE": "scoresde_jax.core.sde",
    "VPSDE": "scoresde_jax.core.sde",
    "bits_per_dim": "scoresde_jax.core.likelihood",
    "classifier_guided_score_fn": "scoresde_jax.core.guidance",
    "decode": "scoresde_jax.sampling",
    "encode": "scoresde_jax.sampling",
    "get_loss_fn": "scoresde_jax.core.losses",
    "get_score_fn": "scoresde_jax.core.score",
    "get_sde": "scoresde_jax.core.sde",
    "log_likelihood": "scoresde_jax.core.likelihood",
    "ode_sample": "scoresde_jax.sampling",
    "pc_sample": "scoresde_jax.sampling",
}

# The library's modules under their short names (``scoresde_jax.sde.get_sde(...)``).
_MODULES = {
    name: f"scoresde_jax.core.{name}"
    for name in ("sde", "score", "losses", "likelihood", "gmm", "guidance", "score_matching")
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scoresde_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_MODULES))
