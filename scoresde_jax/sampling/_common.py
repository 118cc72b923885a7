"""What the samplers return, and their check of a sample shape."""

from __future__ import annotations

from typing import NamedTuple

import jax


class SampleResult(NamedTuple):
    """What a sampler returns.

    Attributes:
      x: the samples, shaped like the requested ``shape``.
      nfe: the number of score-function evaluations spent (a Python int for the fixed-step
        samplers, an int32 array for the adaptive ODE solvers).
    """

    x: jax.Array
    nfe: int | jax.Array


class Trajectory(NamedTuple):
    """States along a path from ``T`` towards ``0``.

    Attributes:
      ts: ``[S]`` the times, decreasing (``ts[0] = T``).
      xs: ``[S, B, ...]`` the state of every example at each time; ``xs[0]`` is the start.
      nfe: the number of score evaluations spent (an int, or an int32 array for adaptive solves).
    """

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
