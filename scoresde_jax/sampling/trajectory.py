"""Whole sample paths, not just endpoints: the reverse SDE and the probability-flow ODE over time.

Both helpers start from given prior points ``x_T``, so the stochastic and the deterministic
dynamics can be compared from the same places (paper, Figure 2 and Section 4.3). They return every
recorded state, ``[S, B, ...]`` for ``S`` times, which is meant for low-dimensional data and
pictures; the samplers in :mod:`scoresde_jax.sampling` keep only the last state.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core import odeint
from scoresde_jax.core.sde import (
    SDE,
    ScoreFn,
    batch_mul,
    probability_flow_drift,
    reverse_drift_diffusion,
)
from scoresde_jax.sampling._common import check_shape

__all__ = ["Trajectory", "ode_trajectory", "reverse_sde_trajectory"]


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


def reverse_sde_trajectory(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array,
    x_T: jax.Array,
    num_steps: int,
    *,
    eps: float = 1e-3,
    denoise: bool = True,
) -> Trajectory:
    """Euler--Maruyama on the reverse-time SDE (paper, Eq. 6), recording every state.

    On the grid ``t_i = linspace(T, eps, num_steps + 1)`` each step is
    ``x_{i+1} = x_i + [f(x_i, t_i) - g(t_i)^2 score(x_i, t_i)] dt_i + g(t_i) sqrt(-dt_i) z_i`` with
    ``dt_i = t_{i+1} - t_i < 0`` and ``z_i ~ N(0, I)`` from ``fold_in(key, i)``. The loop is one
    ``lax.scan``, so it traces once under ``jax.jit``.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      key: a PRNG key for the injected noise.
      x_T: starting points ``[B, ...]`` at time ``T`` (e.g. ``sde.prior_sample``).
      num_steps: number of steps (score evaluations).
      eps: the last time.
      denoise: take the last step without its noise (the samplers' noise removal).

    Returns:
      ``Trajectory(ts [num_steps + 1], xs [num_steps + 1, B, ...], nfe=num_steps)``.

    Raises:
      ValueError: for ``num_steps < 1``, a bad ``eps`` or a bad shape.
    """
    shape = check_shape(x_T.shape)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < eps < sde.T:
        raise ValueError(f"need 0 < eps < T = {sde.T}, got eps={eps}")
    ts = jnp.linspace(sde.T, eps, num_steps + 1, dtype=x_T.dtype)

    def step(x, i):
        t, dt = ts[i], ts[i + 1] - ts[i]
        drift, diffusion = reverse_drift_diffusion(sde, score_fn, x, jnp.full((shape[0],), t))
        x_mean = x + drift * dt
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        x_next = x_mean + batch_mul(diffusion * jnp.sqrt(-dt), noise)
        if denoise:
            x_next = jnp.where(i == num_steps - 1, x_mean, x_next)
        return x_next, x_next

    _, xs = jax.lax.scan(step, x_T, jnp.arange(num_steps))
    return Trajectory(ts, jnp.concatenate([x_T[None], xs]), num_steps)


def ode_trajectory(
    sde: SDE,
    score_fn: ScoreFn,
    x_T: jax.Array,
    ts,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 4096,
) -> Trajectory:
    """The probability-flow ODE (paper, Eq. 13) from ``x_T`` at ``T`` down to ``ts[-1]``.

    One adaptive solve, the same as :func:`scoresde_jax.sampling.ode_sample` with ``z=x_T`` and
    ``eps=ts[-1]``, so the last state equals that sampler's output (no denoising step); the states
    at the other times come from the solver's dense interpolant and cost no extra evaluations.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      x_T: starting points ``[B, ...]`` at time ``T``.
      ts: concrete decreasing times ``[S]`` with ``ts[0] = T`` and ``ts[-1] > 0``.
      rtol, atol, solver, max_steps: as in :func:`scoresde_jax.sampling.ode_sample`.

    Returns:
      ``Trajectory(ts, xs [S, B, ...], nfe)``; NaN states if the solve failed.

    Raises:
      ValueError: for times that are not decreasing from ``T`` to a positive end, or an unknown
        solver.
    """
    shape = check_shape(x_T.shape)
    odeint.check_solver(solver)
    times = np.asarray(ts, np.float64)
    if (
        times.ndim != 1
        or len(times) < 2
        or not np.isclose(times[0], sde.T)
        or not 0 < times[-1] < sde.T
        or np.any(np.diff(times) >= 0)
    ):
        raise ValueError(
            f"ts must decrease strictly from T = {sde.T} to a positive end time, got {ts!r}"
        )
    end = float(times[-1])
    times = jnp.asarray(times, x_T.dtype).at[0].set(sde.T)

    def vector_field(t, y, args):
        del args
        return probability_flow_drift(sde, score_fn, y, jnp.full((shape[0],), t, y.dtype))

    xs, nfe, ok = odeint.solve(
        vector_field,
        x_T,
        sde.T,
        end,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        fixed_steps=sde.N,
        save_ts=times,
    )
    return Trajectory(times, jnp.where(ok, xs, jnp.nan), nfe)
