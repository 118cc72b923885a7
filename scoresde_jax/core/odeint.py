"""One diffrax entry point for every probability-flow ODE solve (sampling, encoding, likelihood).

``nfe`` is exact: ``f(t0, y0)`` is computed once and handed to diffrax as the FSAL solver state
(diffrax would recompute it after each rejection of the first step, unreported), and the first
trial step is ours: the starting step-size rule of Hairer, Norsett & Wanner (Solving Ordinary
Differential Equations I, 2nd ed., Sec. II.4), which scipy's RK45 also uses, from ``f(t0, y0)``
and one more evaluation. A fixed 1 % of the interval, as before, cost the likelihood 6-12
rejected steps at the data end (``t = eps``, where the field changes fastest). FSAL ``nfe = 2 +
(stages - 1) num_steps``, other RK ``2 + stages * num_steps``, Euler ``num_steps``. Failures come
back as ``success`` (``throw=True`` would compile a host callback); callers turn them into NaN.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp

# Solver name -> diffrax class: "euler" takes fixed steps, the others adapt with a PIDController.
SOLVERS: dict[str, type] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "euler": diffrax.Euler,
}

# How the adaptive solvers choose their steps; part of the settings of stored results whose
# numbers depend on it (1: first step 1 % of the interval; 2: the Hairer et al. starting step).
STEP_RULE = 2


@dataclasses.dataclass(frozen=True)
class ODEOptions:
    """How a probability-flow ODE is solved between ``eps`` (the data end, where sampling ends and
    encoding starts) and ``T``: PID tolerances, a :data:`SOLVERS` name (``"euler"`` takes
    ``sde.N`` steps) and ``max_steps`` attempted steps, past which the solve fails (NaN)."""

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
    """Integrates ``dy/dt = vector_field(t, y, args)`` on the pytree ``y`` from ``t0`` to ``t1``.

    ``options.eps`` is the caller's; ``args`` reach the field through diffrax rather than a
    closure; ``fixed_steps`` is Euler's step count. With ``save_ts [S]`` (ordered from ``t0``)
    the states there come from the dense interpolant, without changing the steps. Returns
    ``(y1 or [S, ...] states, nfe int32, success bool)``.
    """
    solver, rtol, atol = options.solver, options.rtol, options.atol
    check_solver(solver)
    solver_obj = SOLVERS[solver]()
    term = diffrax.ODETerm(vector_field)
    solver_state = None
    if isinstance(solver_obj, diffrax.AbstractERK):
        order = solver_obj.order(term)
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        stages = solver_obj.tableau.num_stages
        f0 = vector_field(t0, y0, args)
        dt0 = _first_step(vector_field, t0, t1, y0, f0, args, order, rtol, atol)
        evals_at_start, evals_per_step = 2, stages  # f0 and the first-step probe are ours
        if solver_obj.tableau.fsal:
            solver_state = _fsal_state(solver_obj, term, t0, t1, y0, f0, args)
            evals_per_step = stages - 1
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


def _first_step(vector_field, t0, t1, y0, f0, args, order: int, rtol: float, atol: float):
    """Signed first trial step (Hairer, Norsett & Wanner, Sec. II.4): ``h0 = 0.01 |y0| / |f0|``
    in the controller's scaled RMS norm, then ``(0.01 / max(|f0|, |f'|))^(1/order)`` with
    ``|f'| ~ |f(t0 + h0, y0 + h0 f0) - f0| / h0``, at most ``100 h0`` and the interval."""
    span = abs(t1 - t0)
    direction = 1.0 if t1 >= t0 else -1.0
    scales = jax.tree.map(lambda y: atol + rtol * jnp.abs(y), y0)

    def rms(tree):
        leaves = jax.tree.leaves(jax.tree.map(lambda a, s: (a / s) ** 2, tree, scales))
        size = sum(leaf.size for leaf in leaves)
        return jnp.sqrt(sum(jnp.sum(leaf) for leaf in leaves) / size)

    d0, d1 = rms(y0), rms(f0)
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-30))
    h0 = jnp.minimum(h0, span)
    y1 = jax.tree.map(lambda y, f: y + direction * h0 * f, y0, f0)
    f1 = vector_field(t0 + direction * h0, y1, args)
    d2 = rms(jax.tree.map(lambda a, b: a - b, f1, f0)) / h0
    largest = jnp.maximum(d1, d2)
    h1 = jnp.where(
        largest <= 1e-15,
        jnp.maximum(1e-6, h0 * 1e-3),
        (0.01 / jnp.maximum(largest, 1e-30)) ** (1.0 / order),
    )
    return direction * jax.lax.stop_gradient(jnp.minimum(jnp.minimum(100 * h0, h1), span))


def _fsal_state(solver_obj, term, t0, t1, y0, f0, args):
    """The state of an FSAL RK solver whose first stage ``f0 = f(t0, y0)`` is known.

    The package's only use of diffrax internals (hence the version range in pyproject.toml):
    ``(first_step=False, f0)`` makes diffrax reuse ``f0`` (a constant, like any initial solver
    state); the structure is checked against the solver's own ``init`` so a change fails loudly.
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
