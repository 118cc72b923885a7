"""Sampling by solving the reverse-time SDE with adaptive steps (diffrax, error control).

The reverse SDE (paper, Eq. 6), ``dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw_bar`` from
``t = T`` down to ``eps``, is written in the forward time ``u = T - t`` so that diffrax integrates
it from ``0`` to ``T - eps`` like any SDE:

    dx = -[f(x, T - u) - g(T - u)^2 score(x, T - u)] du + g(T - u) dW_u.

Its noise is additive (``g`` depends on time only, never on ``x``), so Ito and Stratonovich
calculus agree and the additive-noise stochastic Runge--Kutta methods apply. The default solver
is diffrax's ShARK (Foster, dos Reis and Strange 2023, Eq. 6.1): two drift evaluations per step,
strong order 1.5 for additive noise, an embedded error estimate (the difference of its two drift
stages) that diffrax's PID controller turns into adaptive steps, and an exact treatment of a
diffusion ``g(t)`` that varies with time (a linear-in-time correction with the space-time Levy
area). SRA1 (Roessler 2010) is the same kind of method with other weights. Plain Heun would also
adapt, but as a Stratonovich method of strong order 1 it needs more steps for the same tolerance.

Adaptive SDE steps are sound only if the Brownian path does not depend on the steps taken:
a rejected step must see the same noise when it is retried on a finer grid. The Brownian motion
is therefore a ``diffrax.VirtualBrownianTree`` (with the space-time Levy area the solvers need),
which answers any query ``W(u0, u1)`` consistently from one key. The tree resolves the path down
to ``bm_tol``; the controller's ``dtmin`` is twice that, so no step is finer than the path.

The controller is diffrax's PI controller with the coefficients it recommends for SDEs (``pcoeff
= 0.1``, ``icoeff = 0.3``); its error norm is the RMS over the whole batch, so every sample shares
one step sequence. Evaluation count: the additive-noise SRK methods evaluate the drift (and so
the score) once per stage in every attempted step, accepted or rejected, and nowhere else, so
``nfe = stages * sol.stats["num_steps"]`` (+1 for the final denoising step), checked against a
counter in the tests.
"""

from __future__ import annotations

import math

import diffrax
import jax
import jax.numpy as jnp
import lineax

from scoresde_jax.core.sde import SDE, ScoreFn, batch_mul, reverse_drift_diffusion
from scoresde_jax.sampling import grid
from scoresde_jax.sampling._common import SampleResult, check_shape
from scoresde_jax.sampling.fast import check_tolerances

__all__ = ["SDE_SOLVERS", "sde_adaptive_sample"]

SDE_SOLVERS: dict[str, tuple[type, int]] = {
    "shark": (diffrax.ShARK, 2),
    "sra1": (diffrax.SRA1, 2),
}
"""Solver name -> (diffrax solver class, score evaluations per attempted step)."""


def sde_adaptive_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array,
    shape,
    *,
    rtol: float = 0.05,
    atol: float = 0.05,
    eps: float = 1e-3,
    max_steps: int = 4096,
    denoise: bool = True,
    solver: str = "shark",
    first_step: float = 0.01,
    bm_tol: float | None = None,
    pcoeff: float = 0.1,
    icoeff: float = 0.3,
    z: jax.Array | None = None,
) -> SampleResult:
    """Samples by integrating the reverse-time SDE from ``T`` to ``eps`` with adaptive steps.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score`` for ``x: [B, ...]``, ``t: [B]``.
      key: a PRNG key (prior sample and Brownian path).
      shape: the sample shape ``[B, ...]``.
      rtol: relative tolerance of the step-size controller.
      atol: absolute tolerance of the step-size controller, in data units.
      eps: the final time.
      max_steps: the most attempted steps; past it the result is NaN.
      denoise: finish with Tweedie's denoising step ``x_0 = (x + sigma_eps^2 score(x, eps)) /
        alpha_eps``, the posterior mean ``E[x_0 | x_eps]`` (one more score evaluation).
      solver: a name in :data:`SDE_SOLVERS` (``"shark"`` or ``"sra1"``).
      first_step: the first trial step, as a fraction of ``T - eps``.
      bm_tol: the resolution of the virtual Brownian tree (default ``(T - eps) / 2^14``).
      pcoeff: proportional coefficient of the PI controller.
      icoeff: integral coefficient of the PI controller.
      z: prior samples ``shape`` to start from instead of drawing them (the Brownian path
        still comes from ``key``).

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe`` the exact number of score evaluations (int32).

    Raises:
      ValueError: for an unknown solver, a bad shape, ``eps`` or tolerance.
    """
    shape = check_shape(shape)
    if solver not in SDE_SOLVERS:
        raise ValueError(f"Unknown SDE solver {solver!r}; choose one of {sorted(SDE_SOLVERS)}.")
    grid.check_eps(sde, eps)
    check_tolerances(rtol, atol)
    if key is None:
        raise ValueError("sde_adaptive_sample needs a key (the Brownian path)")
    solver_cls, stages = SDE_SOLVERS[solver]
    prior_key, bm_key = jax.random.split(key)
    if z is None:
        z = sde.prior_sample(prior_key, shape)
    elif tuple(z.shape) != shape:
        raise ValueError(f"z has shape {tuple(z.shape)} but shape={shape} was requested")
    dtype = z.dtype
    span = sde.T - eps
    if bm_tol is None:
        bm_tol = span / 2**14
    batch, size = shape[0], math.prod(shape)

    # The state is flat so that the diagonal noise is a lineax.DiagonalLinearOperator.
    def drift(u, y, args):
        del args
        t = jnp.full((batch,), sde.T - u, dtype)
        f, _ = reverse_drift_diffusion(sde, score_fn, y.reshape(shape), t)
        return -f.reshape(-1)

    def diffusion(u, y, args):
        del args
        _, g = sde.drift_diffusion(jnp.zeros((1,) + shape[1:], dtype), jnp.full((1,), sde.T - u))
        return lineax.DiagonalLinearOperator(jnp.full((size,), g[0], dtype))

    brownian = diffrax.VirtualBrownianTree(
        0.0,
        span,
        tol=bm_tol,
        shape=jax.ShapeDtypeStruct((size,), dtype),
        key=bm_key,
        levy_area=diffrax.SpaceTimeLevyArea,
    )
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
    controller = diffrax.PIDController(
        rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff, dtmin=2 * bm_tol
    )
    sol = diffrax.diffeqsolve(
        terms,
        solver_cls(),
        0.0,
        span,
        first_step * span,
        z.reshape(-1),
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=False,
    )
    x = sol.ys[0].reshape(shape)
    nfe = stages * sol.stats["num_steps"]
    if denoise:
        t = jnp.full((batch,), eps, dtype)
        alpha, sigma = sde.marginal_coeffs(t)
        x = batch_mul(1 / alpha, x + batch_mul(sigma**2, score_fn(x, t)))
        nfe = nfe + 1
    ok = sol.result == diffrax.RESULTS.successful
    return SampleResult(jnp.where(ok, x, jnp.nan), jnp.asarray(nfe, jnp.int32))
