"""Pieces shared by the predictors, the correctors and the samplers."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SampleResult(NamedTuple):
    """What a sampler returns.

    Attributes:
      x: the samples, shaped like the requested ``shape``.
      nfe: the number of score-function evaluations spent (a Python int for the fixed-step
        samplers, an int32 array for the adaptive ODE solvers).
    """

    x: jax.Array
    nfe: int | jax.Array


def step_index(t: jax.Array, N: int, T: float) -> jax.Array:
    """Index ``floor(t (N - 1) / T)`` of the discrete noise level at time ``t``.

    This is the convention of the SDEs' own discretizations (SMLD sigmas, DDPM betas), so a
    sampler that reads ``discrete_sigmas``/``discrete_betas``/``alphas`` lands on the same level
    as ``sde.discretize``.
    """
    return jnp.clip((t * (N - 1) / T).astype(jnp.int32), 0, N - 1)


def check_shape(shape) -> tuple[int, ...]:
    """Validates a sample shape ``[B, ...]`` and returns it as a tuple of ints."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise ValueError(f"shape must be a sequence of ints [B, ...], got {shape!r}") from err
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty [B, ...] of positive sizes, got {shape}")
    return shape
