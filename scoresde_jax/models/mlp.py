"""A time-conditioned MLP score network for low-dimensional data (the toy configs)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def positional_embedding(labels: jax.Array, dim: int, max_positions: int = 10_000) -> jax.Array:
    """Sinusoidal embedding of (fractional) time labels, as in DDPM: ``[B] -> [B, dim]``."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_positions) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
    args = labels.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def fourier_embedding(log_labels: jax.Array, w: jax.Array) -> jax.Array:
    """Gaussian random Fourier features ``[sin(2 pi w l), cos(2 pi w l)]`` of ``l = log(label)``."""
    args = 2 * math.pi * log_labels[:, None] * w[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class MLPScore(nn.Module):
    """``(x: [B, D], labels: [B]) -> [B, D]``; labels are times (``embedding="positional"``, e.g.
    ``999 t``) or noise levels sigma (``"fourier"`` of ``log sigma``, VE); ``scale_by_sigma``
    divides by the label, so VE learns ``sigma * score`` (unit scale at every noise level)."""

    hidden: Sequence[int] = (256, 256, 256)
    embedding: str = "positional"
    embed_dim: int = 64
    fourier_scale: float = 16.0
    scale_by_sigma: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        del train
        if x.ndim != 2:
            raise ValueError(f"MLPScore expects x of shape [B, D], got {x.shape}")
        labels = jnp.broadcast_to(labels, (x.shape[0],))
        if self.embedding == "fourier":
            w = self.param(
                "fourier_w",
                lambda k, s: self.fourier_scale * jax.random.normal(k, s),
                (self.embed_dim // 2,),
            )
            # The frequencies are fixed features, not trained (as in NCSN++).
            w = jax.lax.stop_gradient(w)
            temb = fourier_embedding(jnp.log(labels.astype(jnp.float32)), w)
        elif self.embedding == "positional":
            temb = positional_embedding(labels, self.embed_dim)
        else:
            raise ValueError(
                f"Unknown embedding {self.embedding!r}; use 'positional' or 'fourier'."
            )
        temb = nn.Dense(self.embed_dim)(temb)
        temb = nn.Dense(self.embed_dim)(nn.silu(temb))
        h = x
        for width in self.hidden:
            h = nn.Dense(width)(jnp.concatenate([h, temb], axis=-1))
            h = nn.silu(h)
        out = nn.Dense(x.shape[-1])(h)
        if self.scale_by_sigma:
            out = out / labels[:, None]
        return out
