"""Sampling, encoding and decoding with the probability-flow ODE (paper, Section 4.3).

The ODE ``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)`` shares its marginals with the forward SDE,
so integrating it from a prior sample at ``T`` down to ``eps`` gives a data sample, and
integrating a data point from ``eps`` up to ``T`` gives its (deterministic, invertible) latent
code. The integration is diffrax's adaptive Runge--Kutta inside one XLA while loop, so all of it
traces under ``jax.jit``.

Every function takes the solve's options as one :class:`~scoresde_jax.core.odeint.ODEOptions`
(``options``) and/or as keyword overrides of its fields (``eps``, ``rtol``, ``atol``, ``solver``,
``max_steps``). The number of score evaluations (``nfe``) is exact;
:mod:`scoresde_jax.core.odeint` explains how it is counted. ``denoise=True`` adds one.
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
from scoresde_jax.sampling._common import SampleResult, Trajectory, check_shape

__all__ = ["SAMPLING_ODE", "decode", "encode", "ode_sample", "ode_trajectory"]

SAMPLING_ODE = ODEOptions()
"""The default solve of sampling, encoding and decoding: ``eps=1e-3``, ``rtol=atol=1e-5``,
``solver="tsit5"``, ``max_steps=4096``."""


def _options(sde: SDE, options: ODEOptions, fields: dict) -> ODEOptions:
    options = dataclasses.replace(options, **fields)
    grid.check_eps(sde, options.eps)
    odeint.check_solver(options.solver)
    return options


def _solve(
    sde: SDE, score_fn: ScoreFn, y0: jax.Array, t0, t1, options: ODEOptions, save_ts=None
) -> tuple[jax.Array, jax.Array]:
    """Integrates the probability-flow ODE from ``t0`` to ``t1``; returns ``(y1, nfe)`` (with
    ``save_ts``, the states at those times).

    A failed solve (out of ``max_steps``) returns NaN states rather than plausible-looking data.
    """
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
    """Samples by integrating the probability-flow ODE from ``T`` down to ``eps``.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score`` for ``x: [B, ...]``, ``t: [B]``.
      key: a PRNG key for the prior sample (unused, and may be None, when ``z`` is given).
      shape: the sample shape ``[B, ...]``.
      denoise: finish with the noise-free mean of one reverse-diffusion predictor step at ``eps``
        (one more score evaluation).
      z: latent codes ``shape`` to decode instead of prior samples.
      options: the ODE solve (:class:`~scoresde_jax.core.odeint.ODEOptions`, default
        :data:`SAMPLING_ODE`).
      **fields: overrides of ``options``' fields, e.g. ``rtol=1e-4``.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe`` the exact number of score evaluations (an int32
      array; see the module docstring for the formula).

    Raises:
      ValueError: for an unknown solver, a ``z`` whose shape is not ``shape``, or a bad ``eps``.
    """
    shape = check_shape(shape)
    options = _options(sde, options, fields)
    if z is None:
        if key is None:
            raise ValueError("ode_sample needs a key when no latent z is given")
        z = sde.prior_sample(key, shape)
    elif tuple(z.shape) != shape:
        raise ValueError(f"z has shape {tuple(z.shape)} but shape={shape} was requested")
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
    """Maps data ``x`` at time ``eps`` to its latent code at ``T`` along the probability flow.

    ``options`` and ``fields`` as in :func:`ode_sample`. Returns ``SampleResult(z, nfe)``;
    :func:`decode` inverts it up to the solver tolerance.
    """
    check_shape(x.shape)
    options = _options(sde, options, fields)
    return SampleResult(*_solve(sde, score_fn, x, options.eps, sde.T, options))


def decode(
    sde: SDE, score_fn: ScoreFn, z: jax.Array, *, options: ODEOptions = SAMPLING_ODE, **fields
) -> SampleResult:
    """Maps latent codes ``z`` at ``T`` back to data at ``eps`` (no denoising step).

    This is :func:`ode_sample` with a given ``z``; the arguments are those of :func:`encode`.
    """
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
    """The probability-flow ODE (paper, Eq. 13) from ``x_T`` at ``T`` down to ``ts[-1]``.

    The solve of :func:`ode_sample` with ``z=x_T`` and ``eps=ts[-1]``, so the last state equals
    that sampler's output (no denoising step); the states at the other times come from the
    solver's dense interpolant and cost no extra evaluations.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      x_T: starting points ``[B, ...]`` at time ``T``.
      ts: concrete decreasing times ``[S]`` with ``ts[0] = T`` and ``ts[-1] > 0``.
      options, fields: as in :func:`ode_sample` (``eps`` is ``ts[-1]``).

    Returns:
      ``Trajectory(ts, xs [S, B, ...], nfe)``; NaN states if the solve failed.

    Raises:
      ValueError: for times that are not decreasing from ``T`` to a positive end, or an unknown
        solver.
    """
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
