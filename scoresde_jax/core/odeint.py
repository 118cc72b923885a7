"""One diffrax entry point for every probability-flow ODE solve (sampling, encoding, likelihood).

Evaluation count (``nfe``). An explicit Runge--Kutta solver spends ``stages`` evaluations per
attempted step, accepted or rejected. First-same-as-last solvers (Tsit5, Dopri5, Bosh3) reuse
the last stage of an accepted step as the first stage of the next one, and keep it across
rejections, so once the very first stage ``f(t0, y0)`` is known they need ``stages - 1`` new
evaluations per attempt. Diffrax would compute that first stage inside the first step, and again
each time the first step is rejected, which none of its statistics reports; we compute it once
ourselves and hand it to the solver as its initial state. We also give the first trial step size
ourselves (1% of the time interval; the PID controller grows or shrinks it from there) instead of
leaving it to diffrax, whose choice, and the evaluations it spends on it, differ between
versions. The count is then an exact function of ``sol.stats["num_steps"]``:

* FSAL (tsit5, dopri5, bosh3): ``nfe = 1 + (stages - 1) * num_steps``,
* other adaptive RK (heun, dopri8): ``nfe = stages * num_steps``,
* fixed-step Euler: ``nfe = num_steps``.

The test suites check these against a counter inside the vector field.

Failures (for example running out of ``max_steps``) are reported through the returned
``success`` flag rather than by diffrax's ``throw=True``, which would compile a host callback
into the program; callers turn a failure into NaN outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp

__all__ = ["SOLVERS", "ODEOptions", "check_solver", "solve"]

SOLVERS: dict[str, type] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "euler": diffrax.Euler,
}
"""Solver name -> diffrax solver class. ``"euler"`` takes a fixed number of steps and ignores the
tolerances; the others are adaptive with ``diffrax.PIDController(rtol, atol)``."""

# First trial step of the adaptive solvers, as a fraction of the integration interval.
_FIRST_STEP_FRACTION = 0.01


@dataclasses.dataclass(frozen=True)
class ODEOptions:
    """How a probability-flow ODE is solved between ``eps`` (the data end) and ``T``.

    Attributes:
      eps: the time nearest the data (sampling ends there, encoding and likelihood start there).
      rtol, atol: tolerances of the PID step-size controller.
      solver: a name in :data:`SOLVERS` (``"euler"`` takes ``sde.N`` fixed steps).
      max_steps: the most attempted steps; past it the solve has failed (NaN results).
    """

    eps: float = 1e-3
    rtol: float = 1e-5
    atol: float = 1e-5
    solver: str = "tsit5"
    max_steps: int = 4096


def check_solver(name: str) -> None:
    if name not in SOLVERS:
        raise ValueError(f"Unknown ODE solver {name!r}; choose one of {sorted(SOLVERS)}.")


def solve(
    vector_field: Callable,
    y0,
    t0: float,
    t1: float,
    options: ODEOptions,
    *,
    args=None,
    fixed_steps: int | None = None,
    save_ts: jax.Array | None = None,
):
    """Integrates ``dy/dt = vector_field(t, y, args)`` from ``t0`` to ``t1``.

    Args:
      vector_field: ``(t, y, args) -> dy/dt`` on the pytree ``y``.
      y0: the initial state (a pytree of arrays).
      t0, t1: start and end time (``t1 < t0`` integrates backwards).
      options: ``rtol``, ``atol``, ``solver`` and ``max_steps`` (``eps`` is the caller's).
      args: data for the vector field (passed through diffrax rather than closed over).
      fixed_steps: number of steps for ``"euler"``.
      save_ts: optional times ``[S]`` (ordered from ``t0`` towards ``t1``) at which to return
        the state instead of ``t1`` alone; values between solver steps come from the solver's
        dense interpolant, so the steps taken (and ``nfe``) do not change.

    Returns:
      ``(y1, nfe, success)``: the state at ``t1`` (with ``save_ts``: the states ``[S, ...]`` at
      those times), the exact number of vector-field evaluations (int32 scalar) and whether the
      solve succeeded (bool scalar).
    """
    solver, rtol, atol = options.solver, options.rtol, options.atol
    check_solver(solver)
    solver_obj = SOLVERS[solver]()
    term = diffrax.ODETerm(vector_field)
    solver_state = None
    if isinstance(solver_obj, diffrax.AbstractERK):
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = _FIRST_STEP_FRACTION * (t1 - t0)
        stages = solver_obj.tableau.num_stages
        if solver_obj.tableau.fsal:
            f0 = vector_field(t0, y0, args)
            solver_state = _fsal_state(solver_obj, term, t0, t1, y0, f0, args)
            evals_at_start, evals_per_step = 1, stages - 1
        else:
            evals_at_start, evals_per_step = 0, stages
    else:
        if fixed_steps is None or fixed_steps < 1:
            raise ValueError(f"solver {solver!r} needs a positive number of fixed steps")
        controller = diffrax.ConstantStepSize()
        dt0 = (t1 - t0) / fixed_steps
        evals_at_start, evals_per_step = 0, 1

    sol = diffrax.diffeqsolve(
        term,
        solver_obj,
        t0,
        t1,
        dt0,
        y0,
        args=args,
        saveat=diffrax.SaveAt(t1=True) if save_ts is None else diffrax.SaveAt(ts=save_ts),
        stepsize_controller=controller,
        max_steps=options.max_steps,
        solver_state=solver_state,
        throw=False,
    )
    y1 = sol.ys if save_ts is not None else jax.tree.map(lambda y: y[0], sol.ys)
    nfe = evals_at_start + evals_per_step * sol.stats["num_steps"]
    return y1, nfe, sol.result == diffrax.RESULTS.successful


def _fsal_state(solver_obj, term, t0, t1, y0, f0, args):
    """The state of an FSAL Runge--Kutta solver whose first stage ``f0 = f(t0, y0)`` is known.

    The package's only use of diffrax internals (hence the version range in pyproject.toml):
    diffrax keeps ``(first_step, f0)``, and ``first_step=False`` tells it to reuse ``f0``. The
    structure is checked against the solver's own ``init``, so a change in diffrax fails loudly
    rather than silently miscounting. ``f0`` is treated as a constant, as diffrax does with any
    initial solver state.
    """
    reference = jax.eval_shape(lambda y: solver_obj.init(term, t0, t1, y, args), y0)
    state = (jnp.array(False), jax.lax.stop_gradient(f0))
    signature = lambda tree: (
        jax.tree.structure(tree),
        [(a.shape, a.dtype) for a in jax.tree.leaves(tree)],
    )
    if signature(reference) != signature(state):
        raise NotImplementedError(
            f"diffrax {diffrax.__version__} keeps {type(solver_obj).__name__}'s solver state as "
            f"{reference}, not (first_step, f0) as the diffrax versions that pyproject.toml "
            "declares; scoresde_jax.core.odeint._fsal_state needs updating for it"
        )
    return state
