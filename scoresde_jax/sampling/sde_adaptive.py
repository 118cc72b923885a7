"""Sampling by solving the reverse-time SDE with adaptive steps (diffrax, error control).

The reverse SDE (paper, Eq. 6) is integrated in ``u = T - t``; its noise is additive, so
additive-noise SRK methods apply: diffrax's ShARK (Foster, dos Reis and Strange 2023, Eq. 6.1;
strong order 1.5, embedded error estimate) or SRA1 (Roessler 2010). A rejected step must see the
same noise, so the path is a ``VirtualBrownianTree`` resolved to ``bm_tol`` (``dtmin = 2
bm_tol``). The PI controller takes the RMS over the batch (one step sequence for all samples);
``nfe = stages * num_steps`` (+1 for denoising).
"""

from __future__ import annotations

import math

import diffrax
import jax
import jax.numpy as jnp
import lineax

from scoresde_jax.core.sde import SDE, ScoreFn, reverse_drift_diffusion
from scoresde_jax.sampling import grid
from scoresde_jax.sampling._common import SampleResult, check_shape, initial_state, tweedie
from scoresde_jax.sampling.fast import check_tolerances

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

    ``rtol``, ``atol`` (data units), ``pcoeff``, ``icoeff`` configure the step controller,
    ``first_step`` is a fraction of ``T - eps``, ``bm_tol`` defaults to ``(T - eps) / 2^14``.
    ``denoise`` ends with Tweedie's ``E[x_0 | x_eps]`` (one more evaluation). ``z`` replaces the
    prior sample (the Brownian path still comes from ``key``). Past ``max_steps`` attempted
    steps the result is NaN; ``nfe`` (int32) is exact.
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
    z = initial_state(sde, prior_key, shape, z)
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
        x = tweedie(sde, score_fn, x, jnp.full((batch,), eps, dtype))
        nfe = nfe + 1
    ok = sol.result == diffrax.RESULTS.successful
    return SampleResult(jnp.where(ok, x, jnp.nan), jnp.asarray(nfe, jnp.int32))
