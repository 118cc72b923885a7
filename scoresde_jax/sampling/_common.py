"""What the samplers return, and the checks and steps they share."""

from __future__ import annotations

from typing import NamedTuple

import jax

from scoresde_jax.core.sde import batch_mul


class SampleResult(NamedTuple):
    """Samples ``x`` of the requested shape and the score evaluations spent (``nfe``: an int for
    fixed-step samplers, an int32 array for adaptive ones)."""

    x: jax.Array
    nfe: int | jax.Array


class Trajectory(NamedTuple):
    """States ``xs [S, B, ...]`` at decreasing times ``ts [S]`` (``ts[0] = T``, ``xs[0]`` the
    start) and the score evaluations spent."""

    ts: jax.Array
    xs: jax.Array
    nfe: int | jax.Array


def check_shape(shape) -> tuple[int, ...]:
    """Validates a sample shape ``[B, ...]`` and returns it as a tuple of ints."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise ValueError(f"shape must be a sequence of ints [B, ...], got {shape!r}") from err
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty [B, ...] of positive sizes, got {shape}")
    return shape


def initial_state(sde, key, shape: tuple[int, ...], z) -> jax.Array:
    """``z`` checked against ``shape``, or a prior sample drawn with ``key`` when ``z`` is None."""
    if z is None:
        if key is None:
            raise ValueError("a key is needed when no latent z is given")
        return sde.prior_sample(key, shape)
    if tuple(z.shape) != shape:
        raise ValueError(f"z has shape {tuple(z.shape)} but shape={shape} was requested")
    return z


def tweedie(sde, score_fn, x: jax.Array, t: jax.Array) -> jax.Array:
    """``E[x_0 | x_t] = (x_t + sigma_t^2 score(x_t, t)) / alpha_t`` (Tweedie's formula)."""
    alpha, sigma = sde.marginal_coeffs(t)
    return batch_mul(1.0 / alpha, x + batch_mul(sigma**2, score_fn(x, t)))
