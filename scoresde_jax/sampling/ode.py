"""Sampling, encoding and decoding with the probability-flow ODE (paper, Section 4.3).

Solved by diffrax inside one XLA loop; every function takes an
:class:`~scoresde_jax.core.odeint.ODEOptions` and/or overrides of its fields. ``nfe`` is exact;
``denoise=True`` adds one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core import odeint
from scoresde_jax.core.odeint import ODEOptions
from scoresde_jax.core.sde import SDE, ScoreFn, probability_flow_drift, reverse_discretize
from scoresde_jax.sampling import grid
from scoresde_jax.sampling._common import SampleResult, Trajectory, check_shape, initial_state

SAMPLING_ODE = ODEOptions()
"""The default solve: ``eps=1e-3``, ``rtol=atol=1e-5``, ``solver="tsit5"``, ``max_steps=4096``."""


def _options(sde: SDE, options: ODEOptions, fields: dict) -> ODEOptions:
    options = dataclasses.replace(options, **fields)
    grid.check_eps(sde, options.eps)
    odeint.check_solver(options.solver)
    return options


def _solve(
    sde: SDE, score_fn: ScoreFn, y0: jax.Array, t0, t1, options: ODEOptions, save_ts=None
) -> tuple[jax.Array, jax.Array]:
    """``(y1, nfe)``: the probability-flow ODE from ``t0`` to ``t1`` (with ``save_ts``, the states
    at those times); a failed solve returns NaN rather than plausible-looking data."""
    batch = y0.shape[0]

    def vector_field(t, y, args):
        del args
        return probability_flow_drift(sde, score_fn, y, jnp.full((batch,), t, y.dtype))

    y1, nfe, ok = odeint.solve(
        vector_field, y0, t0, t1, options, fixed_steps=sde.N, save_ts=save_ts
    )
    return jnp.where(ok, y1, jnp.nan), nfe


def ode_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array | None,
    shape,
    *,
    denoise: bool = False,
    z: jax.Array | None = None,
    options: ODEOptions = SAMPLING_ODE,
    **fields,
) -> SampleResult:
    """Samples by integrating the probability-flow ODE from ``T`` (prior samples, or ``z``) down
    to ``eps``; ``denoise`` adds the noise-free mean of one reverse-diffusion step at ``eps``.
    ``nfe`` is an int32 array."""
    shape = check_shape(shape)
    options = _options(sde, options, fields)
    z = initial_state(sde, key, shape, z)
    x, nfe = _solve(sde, score_fn, z, sde.T, options.eps, options)
    if denoise:
        t = jnp.full((shape[0],), options.eps, x.dtype)
        rev_f, _ = reverse_discretize(sde, score_fn, x, t)
        x = x - rev_f
        nfe = nfe + 1
    return SampleResult(x, nfe)


def encode(
    sde: SDE, score_fn: ScoreFn, x: jax.Array, *, options: ODEOptions = SAMPLING_ODE, **fields
) -> SampleResult:
    """``SampleResult(z, nfe)``: the latent code at ``T`` of data ``x`` at ``eps`` (the inverse of
    :func:`decode` up to the solver tolerance)."""
    check_shape(x.shape)
    options = _options(sde, options, fields)
    return SampleResult(*_solve(sde, score_fn, x, options.eps, sde.T, options))


def decode(
    sde: SDE, score_fn: ScoreFn, z: jax.Array, *, options: ODEOptions = SAMPLING_ODE, **fields
) -> SampleResult:
    """Maps latent codes ``z`` at ``T`` back to data at ``eps``: :func:`ode_sample` with ``z``."""
    return ode_sample(sde, score_fn, None, z.shape, z=z, options=options, **fields)


def ode_trajectory(
    sde: SDE,
    score_fn: ScoreFn,
    x_T: jax.Array,
    ts,
    *,
    options: ODEOptions = SAMPLING_ODE,
    **fields,
) -> Trajectory:
    """The probability-flow ODE (paper, Eq. 13) from ``x_T`` at ``T`` down to ``ts[-1]``; the
    states at ``ts`` come from the dense interpolant at no extra evaluations (NaN if it failed)."""
    check_shape(x_T.shape)
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
    options = _options(sde, options, {**fields, "eps": float(times[-1])})
    times = jnp.asarray(times, x_T.dtype).at[0].set(sde.T)
    xs, nfe = _solve(sde, score_fn, x_T, sde.T, options.eps, options, save_ts=times)
    return Trajectory(times, xs, nfe)
