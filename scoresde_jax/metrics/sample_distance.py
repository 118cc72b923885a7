"""Distances between two sets of samples, for samplers judged against exact samples.

* :func:`sliced_wasserstein`: the sliced 2-Wasserstein distance (Rabin et al. 2011, "Wasserstein
  barycenter and its application to texture mixing"): the root mean square over fixed unit
  directions ``theta`` of the 1-D 2-Wasserstein distance between the projections ``<x, theta>``
  and ``<y, theta>``. In 1-D, with equally many points on each side, the optimal coupling
  matches the sorted values, so ``W_2^2 = mean((sort(a) - sort(b))^2)``. It is zero only for
  equal empirical laws (of the projections), it sees every direction the same way, and it costs
  ``O(P n log n)``. Two independent sets of ``n`` exact samples are ``O(n^{-1/2})`` apart; that
  noise floor is what a sampler's distance should be compared with.
* :func:`weight_error`: how far the frequencies of component labels are from the mixture
  weights (total variation distance of the two categorical laws).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["random_directions", "sliced_wasserstein", "weight_error"]


def random_directions(seed: int, num: int, dim: int) -> jax.Array:
    """``[num, dim]`` unit vectors drawn uniformly on the sphere from ``seed`` (fixed
    projections, so that distances computed with the same seed are comparable)."""
    if num < 1 or dim < 1:
        raise ValueError(f"need num >= 1 and dim >= 1, got num={num}, dim={dim}")
    v = jax.random.normal(jax.random.key(seed), (num, dim))
    return v / jnp.linalg.norm(v, axis=1, keepdims=True)


@jax.jit
def sliced_wasserstein(x: jax.Array, y: jax.Array, directions: jax.Array) -> jax.Array:
    """Sliced 2-Wasserstein distance between the samples ``x: [n, D]`` and ``y: [n, D]``.

    Args:
      x: the first set of ``n`` points.
      y: the second set, with the same number of points.
      directions: ``[P, D]`` unit vectors (see :func:`random_directions`).

    Returns:
      ``sqrt(mean_p W_2^2(<x, theta_p>, <y, theta_p>))``, a scalar.

    Raises:
      ValueError: if the two sets differ in size or dimension.
    """
    if x.ndim != 2 or x.shape != y.shape or directions.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"need x and y of the same shape [n, D] and directions [P, D]; got {x.shape}, "
            f"{y.shape}, {directions.shape}"
        )
    px = jnp.sort(x @ directions.T, axis=0)
    py = jnp.sort(y @ directions.T, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def weight_error(labels, weights) -> float:
    """Total variation ``1/2 sum_k |freq_k - w_k|`` between label frequencies and weights.

    Args:
      labels: ``[n]`` integer component labels (for samples, the argmax of the posterior
        responsibilities).
      weights: ``[K]`` mixture weights.
    """
    weights = np.asarray(weights, np.float64)
    labels = np.asarray(labels)
    freq = np.bincount(labels, minlength=len(weights)) / labels.size
    return float(0.5 * np.abs(freq - weights).sum())
