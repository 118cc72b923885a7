"""Sampling, encoding and decoding with the probability-flow ODE (paper, Section 4.3).

The ODE ``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)`` shares its marginals with the forward SDE,
so integrating it from a prior sample at ``T`` down to ``eps`` gives a data sample, and
integrating a data point from ``eps`` up to ``T`` gives its (deterministic, invertible) latent
code. The integration is diffrax's adaptive Runge--Kutta inside one XLA while loop, so all of it
traces under ``jax.jit``.

Evaluation count (``nfe``). An explicit Runge--Kutta solver spends ``stages`` evaluations per
attempted step, accepted or rejected. First-same-as-last solvers (Tsit5, Dopri5) reuse the last
stage of an accepted step as the first stage of the next one, and keep it across rejections, so
once the very first stage ``f(t0, y0)`` is known they need ``stages - 1`` new evaluations per
attempt. Diffrax would compute that first stage inside the first step, and again each time the
first step is rejected, which none of its statistics reports; we compute it once ourselves and
hand it to the solver as its initial state. We also give the first trial step size ourselves
(1% of the time interval; the PID controller grows or shrinks it from there) instead of leaving
it to diffrax, whose choice, and the evaluations it spends on it, differ between versions. The
count is then an exact function of ``sol.stats["num_steps"]``:

* FSAL (tsit5, dopri5): ``nfe = 1 + (stages - 1) * num_steps``,
* other adaptive RK (heun): ``nfe = stages * num_steps``,
* fixed-step Euler: ``nfe = num_steps``,

plus one for the optional denoising step. The test suite checks these against a counter in the
score function.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from scoresde_jax.sampling._common import SampleResult, check_shape
from scoresde_jax.sde import SDE, ScoreFn, probability_flow_drift, reverse_discretize

__all__ = ["SOLVERS", "decode", "encode", "ode_sample"]

SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "heun": diffrax.Heun,
    "euler": diffrax.Euler,
}
"""Solver name -> diffrax solver class. ``"euler"`` takes ``sde.N`` fixed steps and ignores the
tolerances; the others are adaptive with ``diffrax.PIDController(rtol, atol)``."""

# First trial step of the adaptive solvers, as a fraction of the integration interval.
_FIRST_STEP_FRACTION = 0.01


def _make_solver(name: str):
    if name not in SOLVERS:
        raise ValueError(f"Unknown ODE solver {name!r}; choose one of {sorted(SOLVERS)}.")
    return SOLVERS[name]()


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
    """Integrates the probability-flow ODE from ``t0`` to ``t1``; returns ``(y1, nfe)``."""
    solver_obj = _make_solver(solver)
    batch = y0.shape[0]

    def vector_field(t, y, args):
        del args
        return probability_flow_drift(sde, score_fn, y, jnp.full((batch,), t, y.dtype))

    term = diffrax.ODETerm(vector_field)
    solver_state = None
    if isinstance(solver_obj, diffrax.AbstractERK):
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = _FIRST_STEP_FRACTION * (t1 - t0)
        stages = solver_obj.tableau.num_stages
        if solver_obj.tableau.fsal:
            solver_state = _fsal_state(solver_obj, term, t0, t1, y0, vector_field(t0, y0, None))
            evals_at_start, evals_per_step = 1, stages - 1
        else:
            evals_at_start, evals_per_step = 0, stages
    else:
        controller = diffrax.ConstantStepSize()
        dt0 = (t1 - t0) / sde.N
        evals_at_start, evals_per_step = 0, 1

    sol = diffrax.diffeqsolve(
        term,
        solver_obj,
        t0,
        t1,
        dt0,
        y0,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=controller,
        max_steps=max_steps,
        solver_state=solver_state,
    )
    nfe = evals_at_start + evals_per_step * sol.stats["num_steps"]
    return sol.ys[0], nfe


def _fsal_state(solver_obj, term, t0, t1, y0, f0):
    """The state of an FSAL Runge--Kutta solver whose first stage ``f0 = f(t0, y0)`` is known.

    Diffrax keeps ``(first_step, f0)``; ``first_step=False`` tells it to reuse ``f0``. The
    structure is checked against the solver's own ``init`` so a change in diffrax fails loudly
    rather than silently miscounting. ``f0`` is treated as a constant, as diffrax does with any
    initial solver state.
    """
    reference = jax.eval_shape(lambda y: solver_obj.init(term, t0, t1, y, None), y0)
    state = (jnp.array(False), jax.lax.stop_gradient(f0))
    signature = lambda tree: (
        jax.tree.structure(tree),
        [(a.shape, a.dtype) for a in jax.tree.leaves(tree)],
    )
    if signature(reference) != signature(state):
        raise NotImplementedError(
            f"unexpected {type(solver_obj).__name__} solver state {reference}; this diffrax "
            "version is not supported by scoresde_jax.sampling.ode"
        )
    return state


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
      solver: one of :data:`SOLVERS` (``"tsit5"``, ``"dopri5"``, ``"heun"``, ``"euler"``).
      denoise: finish with the noise-free mean of one reverse-diffusion predictor step at ``eps``
        (one more score evaluation).
      z: latent codes ``shape`` to decode instead of prior samples.
      max_steps: the most solver steps (accepted and rejected) before diffrax raises.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe`` the exact number of score evaluations (an int32
      array; see the module docstring for the formula).

    Raises:
      ValueError: for an unknown solver, a ``z`` whose shape is not ``shape``, or a bad ``eps``.
    """
    shape = check_shape(shape)
    _check_eps(sde, eps)
    _make_solver(solver)
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
