"""Score networks (Flax Linen)."""

from scoresde_jax.models.mlp import MLPScore

__all__ = ["MLPScore"]
