"""Score networks (Flax Linen), all called as ``model.apply(params, x, labels, train=False)``.

``x`` is a batch ``[B, ...]`` (images are NHWC), ``labels`` the noise-conditioning labels of
:func:`scoresde_jax.score.time_labels`; with ``train=True`` dropout is active and needs an rng
named ``"dropout"``.

:data:`MODELS` maps ``config.model.name`` to the module whose ``from_config(config)`` turns the
experiment config into a constructor call with typed arguments. Modules are imported when a
model is built, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib

import flax.linen as nn

from scoresde_jax.models.mlp import MLPScore

__all__ = ["MODELS", "MLPScore", "get_model"]

MODELS: dict[str, str] = {
    "mlp": "scoresde_jax.models.mlp",
    "ncsnpp": "scoresde_jax.models.ncsnpp",
    "ddpm": "scoresde_jax.models.ddpm",
    "ncsn": "scoresde_jax.models.ncsnv2",
    "ncsnv2_64": "scoresde_jax.models.ncsnv2",
    "ncsnv2_128": "scoresde_jax.models.ncsnv2",
    "ncsnv2_256": "scoresde_jax.models.ncsnv2",
}


def get_model(config) -> nn.Module:
    """Builds the network named by ``config.model.name`` from an experiment config."""
    name = config.model.name
    if name not in MODELS:
        raise ValueError(f"Unknown config.model.name={name!r}; choose one of {sorted(MODELS)}.")
    return importlib.import_module(MODELS[name]).from_config(config)
