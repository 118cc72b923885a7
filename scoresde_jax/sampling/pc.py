"""The predictor-corrector sampler (paper, Algorithm 1), as one XLA loop, with an optional
constraint on part of the state (inpainting, colorization) and an option to record the path."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import SDE, ScoreFn, batch_mul
from scoresde_jax.sampling import grid
from scoresde_jax.sampling._common import SampleResult, Trajectory, check_shape, initial_state
from scoresde_jax.sampling.correctors import CORRECTORS
from scoresde_jax.sampling.predictors import FLOW_PREDICTORS, PREDICTORS


def _lookup(table: dict, name: str, kind: str):
    if name not in table:
        raise ValueError(f"Unknown {kind} {name!r}; choose one of {sorted(table)}.")
    return table[name]


def _check_discrete_betas(sde: SDE, predictor: str, corrector: str) -> None:
    """DDPM's discrete betas ``beta(t_i) / N`` must stay below 1 where a step uses them (NaN)."""

    if sde.max_discrete_beta < 1:
        return
    uses_betas = corrector != "none" or (
        sde.discrete_chain and predictor in ("reverse_diffusion", "ancestral_sampling")
    )
    if uses_betas:
        raise ValueError(
            f"num_steps={sde.N} is too few for predictor {predictor!r} / corrector "
            f"{corrector!r}: the discrete betas beta_max / num_steps = {sde.max_discrete_beta:.3g} "
            f"reach 1. Use num_steps > {int(sde.beta_max)}, or predictor 'euler_maruyama' with "
            "corrector 'none', or a fast sampler (config.sampling.method='dpm_solver_pp')."
        )


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A known part of the state: ``data`` where ``known``, replaced after every update by a draw
    of ``p_0t(x_t | x_0 = data)`` (paper, App. I.2); starts as ``data`` or a draw of ``p_0T``."""

    data: jax.Array
    known: jax.Array
    perturb_known_init: bool = False

    def start(self, sde: SDE, x: jax.Array, key: jax.Array) -> jax.Array:
        init = self.data
        if self.perturb_known_init:
            t = jnp.full(self.data.shape[:1], sde.T, self.data.dtype)
            init, _ = self.project(sde, init, init, t, key)
        return jnp.where(self.known, init, x.astype(self.data.dtype))

    def project(self, sde: SDE, x, x_mean, t, key) -> tuple[jax.Array, jax.Array]:
        """Replaces the known part of ``x`` by a draw of ``p_0t``, and of ``x_mean`` by its mean."""
        mean, std = sde.marginal_prob(self.data, t)
        noise = jax.random.normal(key, self.data.shape, self.data.dtype)
        return (
            jnp.where(self.known, mean + batch_mul(std, noise), x),
            jnp.where(self.known, mean, x_mean),
        )


def pc_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array,
    shape,
    *,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    denoise: bool = True,
    eps: float = 1e-3,
    num_steps: int | None = None,
    probability_flow: bool = False,
    constraint: Constraint | None = None,
    z: jax.Array | None = None,
    trajectory: bool = False,
) -> SampleResult | Trajectory:
    """Samples by alternating corrector and predictor steps at
    :func:`~scoresde_jax.sampling.grid.pc_times` from ``T`` to ``eps`` in one ``lax.scan`` (key
    ``fold_in(key, i)`` at step ``i``); the paper's ``snr`` is 0.16 for VE, 0.01 for VP/sub-VP.
    ``num_steps`` other than ``sde.N`` rebuilds the SDE with that ``N``; ``probability_flow``
    makes the predictor deterministic (correctors still add noise). ``trajectory`` returns ``xs
    [num_steps + 1, ...]``: ``x_T``, the state after each step, the sample last (``ts[-1] = 0``).
    """
    predictor_fn = _lookup(PREDICTORS, predictor, "predictor")
    corrector_fn = _lookup(CORRECTORS, corrector, "corrector")
    if probability_flow:
        if predictor not in FLOW_PREDICTORS:
            raise ValueError(
                f"predictor {predictor!r} has no probability-flow form; use one of "
                f"{list(FLOW_PREDICTORS)} or probability_flow=False."
            )
        if predictor != "none":
            predictor_fn = functools.partial(predictor_fn, probability_flow=True)
    shape = check_shape(shape)
    if num_steps is None:
        num_steps = sde.N
    if num_steps < 1 or n_steps < 0:
        raise ValueError(f"need num_steps >= 1 and n_steps >= 0, got {num_steps}, {n_steps}")
    if num_steps != sde.N:
        sde = dataclasses.replace(sde, N=num_steps)
    grid.check_eps(sde, eps)
    _check_discrete_betas(sde, predictor, corrector)

    # Without a constraint: (prior, loop) keys and (corrector, predictor) keys per step; with
    # one also a key for its start and two per step for its projections.
    n_keys = 2 if constraint is None else 3
    prior_key, *start_key, loop_key = jax.random.split(key, n_keys)
    x = initial_state(sde, prior_key, shape, z)
    if constraint is not None:
        x = constraint.start(sde, x, start_key[0])
    ts = grid.pc_times(sde.T, eps, num_steps)

    def step(carry, i):
        x, _ = carry
        t = jnp.full((shape[0],), ts[i], x.dtype)
        keys = jax.random.split(jax.random.fold_in(loop_key, i), 2 * n_keys - 2)
        x, _ = corrector_fn(sde, score_fn, x, t, keys[0], snr, n_steps)
        if constraint is not None and corrector != "none":
            x, _ = constraint.project(sde, x, x, t, keys[2])
        x, x_mean = predictor_fn(sde, score_fn, x, t, keys[1])
        if constraint is not None:
            landing = jnp.full((shape[0],), ts[i + 1], x.dtype)
            x, x_mean = constraint.project(sde, x, x_mean, landing, keys[3])
        return (x, x_mean), x if trajectory else None

    x0 = x
    (x, x_mean), xs = jax.lax.scan(step, (x, x), jnp.arange(num_steps))
    x = x_mean if denoise else x
    if constraint is not None:
        x = jnp.where(constraint.known, constraint.data, x)
    nfe = num_steps * (int(predictor != "none") + int(corrector != "none") * n_steps)
    if trajectory:
        return Trajectory(ts, jnp.concatenate([x0[None], xs[:-1], x[None]]), nfe)
    return SampleResult(x, nfe)


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
    """Euler--Maruyama on the reverse-time SDE (paper, Eq. 6) from ``x_T``, recording every state:
    :func:`pc_sample` with ``"euler_maruyama"``, no corrector, ``z=x_T``, ``trajectory=True``."""
    return pc_sample(
        sde,
        score_fn,
        key,
        x_T.shape,
        predictor="euler_maruyama",
        corrector="none",
        denoise=denoise,
        eps=eps,
        num_steps=num_steps,
        z=x_T,
        trajectory=True,
    )
