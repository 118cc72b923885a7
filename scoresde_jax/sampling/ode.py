"""Sampling, encoding and decoding with the probability-flow ODE (paper, Section 4.3).

The ODE ``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)`` shares its marginals with the forward SDE,
so integrating it from a prior sample at ``T`` down to ``eps`` gives a data sample, and
integrating a data point from ``eps`` up to ``T`` gives its (deterministic, invertible) latent
code. The integration is diffrax's adaptive Runge--Kutta inside one XLA while loop, so all of it
traces under ``jax.jit``.

The number of score evaluations (``nfe``) is exact; :mod:`scoresde_jax.core.odeint` explains how it
is counted. ``denoise=True`` adds one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scoresde_jax.core import odeint
from scoresde_jax.core.odeint import SOLVERS
from scoresde_jax.core.sde import SDE, ScoreFn, probability_flow_drift, reverse_discretize
from scoresde_jax.sampling._common import SampleResult, check_shape

__all__ = ["SOLVERS", "decode", "encode", "ode_sample"]


def _check_eps(sde: SDE, eps: float) -> None:
    if not 0 < eps < sde.T:
        raise ValueError(f"need 0 < eps < T = {sde.T}, got eps={eps}")


def _solve(
    sde: SDE,
    score_fn: ScoreFn,
    y0: jax.Array,
    t0: float,
    t1: float,
    *,
    rtol: float,
    atol: float,
    solver: str,
    max_steps: int,
) -> tuple[jax.Array, jax.Array]:
    """Integrates the probability-flow ODE from ``t0`` to ``t1``; returns ``(y1, nfe)``.

    A failed solve (out of ``max_steps``) returns NaN states rather than plausible-looking data.
    """
    batch = y0.shape[0]

    def vector_field(t, y, args):
        del args
        return probability_flow_drift(sde, score_fn, y, jnp.full((batch,), t, y.dtype))

    y1, nfe, ok = odeint.solve(
        vector_field,
        y0,
        t0,
        t1,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        fixed_steps=sde.N,
    )
    return jnp.where(ok, y1, jnp.nan), nfe


def ode_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array | None,
    shape,
    *,
    eps: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    denoise: bool = False,
    z: jax.Array | None = None,
    max_steps: int = 4096,
) -> SampleResult:
    """Samples by integrating the probability-flow ODE from ``T`` down to ``eps``.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score`` for ``x: [B, ...]``, ``t: [B]``.
      key: a PRNG key for the prior sample (unused, and may be None, when ``z`` is given).
      shape: the sample shape ``[B, ...]``.
      eps: the final time.
      rtol: relative tolerance of the step-size controller.
      atol: absolute tolerance of the step-size controller.
      solver: one of :data:`scoresde_jax.core.odeint.SOLVERS` (``"tsit5"``, ``"dopri5"``,
        ``"dopri8"``, ``"bosh3"``, ``"heun"``; ``"euler"`` takes ``sde.N`` fixed steps).
      denoise: finish with the noise-free mean of one reverse-diffusion predictor step at ``eps``
        (one more score evaluation).
      z: latent codes ``shape`` to decode instead of prior samples.
      max_steps: the most solver steps (accepted and rejected); past it the result is NaN.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe`` the exact number of score evaluations (an int32
      array; see the module docstring for the formula).

    Raises:
      ValueError: for an unknown solver, a ``z`` whose shape is not ``shape``, or a bad ``eps``.
    """
    shape = check_shape(shape)
    _check_eps(sde, eps)
    odeint.check_solver(solver)
    if z is None:
        if key is None:
            raise ValueError("ode_sample needs a key when no latent z is given")
        z = sde.prior_sample(key, shape)
    elif tuple(z.shape) != shape:
        raise ValueError(f"z has shape {tuple(z.shape)} but shape={shape} was requested")
    x, nfe = _solve(
        sde, score_fn, z, sde.T, eps, rtol=rtol, atol=atol, solver=solver, max_steps=max_steps
    )
    if denoise:
        t = jnp.full((shape[0],), eps, x.dtype)
        rev_f, _ = reverse_discretize(sde, score_fn, x, t)
        x = x - rev_f
        nfe = nfe + 1
    return SampleResult(x, nfe)


def encode(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    *,
    eps: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 4096,
) -> SampleResult:
    """Maps data ``x`` at time ``eps`` to its latent code at ``T`` along the probability flow.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      x: data ``[B, ...]``.
      eps, rtol, atol, solver, max_steps: as in :func:`ode_sample`.

    Returns:
      ``SampleResult(z, nfe)``; :func:`decode` inverts it up to the solver tolerance.
    """
    check_shape(x.shape)
    _check_eps(sde, eps)
    z, nfe = _solve(
        sde, score_fn, x, eps, sde.T, rtol=rtol, atol=atol, solver=solver, max_steps=max_steps
    )
    return SampleResult(z, nfe)


def decode(
    sde: SDE,
    score_fn: ScoreFn,
    z: jax.Array,
    *,
    eps: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 4096,
) -> SampleResult:
    """Maps latent codes ``z`` at ``T`` back to data at ``eps`` (no denoising step).

    This is :func:`ode_sample` with a given ``z``; the arguments are those of :func:`encode`.
    """
    return ode_sample(
        sde,
        score_fn,
        None,
        z.shape,
        eps=eps,
        rtol=rtol,
        atol=atol,
        solver=solver,
        z=z,
        max_steps=max_steps,
    )
