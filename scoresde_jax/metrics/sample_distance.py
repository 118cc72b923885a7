"""Distances between two sets of samples, for samplers judged against exact samples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def random_directions(seed: int, num: int, dim: int) -> jax.Array:
    """``[num, dim]`` unit vectors drawn uniformly on the sphere from ``seed`` (fixed projections:
    distances with the same seed are comparable)."""
    if num < 1 or dim < 1:
        raise ValueError(f"need num >= 1 and dim >= 1, got num={num}, dim={dim}")
    v = jax.random.normal(jax.random.key(seed), (num, dim))
    return v / jnp.linalg.norm(v, axis=1, keepdims=True)


@jax.jit
def sliced_wasserstein(x: jax.Array, y: jax.Array, directions: jax.Array) -> jax.Array:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011) ``sqrt(mean_p W_2^2(<x, theta_p>, <y,
    theta_p>))`` of ``x, y [n, D]`` over ``directions [P, D]``, by sorting (the optimal 1-D
    coupling). Two sets of ``n`` exact samples are ``O(n^{-1/2})`` apart: the noise floor."""
    if x.ndim != 2 or x.shape != y.shape or directions.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"need x and y of the same shape [n, D] and directions [P, D]; got {x.shape}, "
            f"{y.shape}, {directions.shape}"
        )
    px = jnp.sort(x @ directions.T, axis=0)
    py = jnp.sort(y @ directions.T, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def weight_error(labels, weights) -> float:
    """Total variation ``1/2 sum_k |freq_k - w_k|`` between the frequencies of component
    ``labels [n]`` (for samples: the argmax of the responsibilities) and mixture ``weights [K]``."""
    weights = np.asarray(weights, np.float64)
    labels = np.asarray(labels)
    freq = np.bincount(labels, minlength=len(weights)) / labels.size
    return float(0.5 * np.abs(freq - weights).sum())
