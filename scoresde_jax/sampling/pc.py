"""The predictor-corrector sampler (paper, Algorithm 1), as one XLA loop."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import SDE, VPSDE, ScoreFn, SubVPSDE
from scoresde_jax.sampling._common import SampleResult, check_shape
from scoresde_jax.sampling.correctors import CORRECTORS
from scoresde_jax.sampling.predictors import FLOW_PREDICTORS, PREDICTORS

__all__ = ["pc_sample"]


def _lookup(table: dict, name: str, kind: str):
    if name not in table:
        raise ValueError(f"Unknown {kind} {name!r}; choose one of {sorted(table)}.")
    return table[name]


def _check_discrete_betas(sde: SDE, predictor: str, corrector: str) -> None:
    """DDPM's discrete betas ``beta_i = beta(t_i) / N`` must stay below 1 where a step uses them
    (``sqrt(1 - beta)``, ``alpha = 1 - beta``); with too few steps they would give NaN."""
    if not isinstance(sde, VPSDE | SubVPSDE) or sde.beta_max / sde.N < 1:
        return
    uses_betas = corrector != "none" or (
        isinstance(sde, VPSDE) and predictor in ("reverse_diffusion", "ancestral_sampling")
    )
    if uses_betas:
        raise ValueError(
            f"num_steps={sde.N} is too few for predictor {predictor!r} / corrector "
            f"{corrector!r}: the discrete betas beta_max / num_steps = {sde.beta_max / sde.N:.3g} "
            f"reach 1. Use num_steps > {int(sde.beta_max)}, or predictor 'euler_maruyama' with "
            "corrector 'none', or a fast sampler (config.sampling.method='dpm_solver_pp')."
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
) -> SampleResult:
    """Samples from the model by alternating corrector and predictor steps from ``T`` to ``eps``.

    ``x_T`` is drawn from the prior; then for each ``t`` in ``linspace(T, eps, num_steps)`` the
    corrector runs ``n_steps`` Langevin steps at ``t`` and the predictor moves ``x`` one step of
    the reverse SDE. The whole loop is a single ``lax.fori_loop`` and the key of step ``i`` is
    ``fold_in(key, i)``, so the function traces once and can be called inside ``jax.jit`` (with
    ``sde``, ``score_fn``, ``shape`` and the string options static).

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score`` for ``x: [B, ...]``, ``t: [B]``.
      key: a PRNG key.
      shape: the sample shape ``[B, ...]``.
      predictor: one of :data:`PREDICTORS` (``"euler_maruyama"``, ``"reverse_diffusion"``,
        ``"ancestral_sampling"``, ``"none"``).
      corrector: one of :data:`CORRECTORS` (``"langevin"``, ``"ald"``, ``"none"``).
      snr: the corrector's target signal-to-noise ratio (the paper uses 0.16 for VE, 0.01 for
        VP/sub-VP with the Langevin corrector).
      n_steps: corrector steps per time step.
      denoise: return the noise-free mean of the last step instead of the noisy state.
      eps: the last (smallest) time, to avoid the singular score at ``t = 0``.
      num_steps: number of time steps; ``sde.N`` if None. Otherwise the SDE is rebuilt with
        ``N = num_steps`` so its discretization matches the grid.
      probability_flow: make the predictor a deterministic step of the probability-flow ODE
        (``euler_maruyama`` and ``reverse_diffusion`` only, as in the paper's code); correctors
        still add noise.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe = num_steps * (p + c * n_steps)``, where ``p`` and ``c``
      are 1 when the predictor / corrector evaluates the score and 0 for ``"none"``.

    Raises:
      ValueError: for an unknown predictor or corrector, or a bad shape or step count.
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
    if not 0 < eps < sde.T:
        raise ValueError(f"need 0 < eps < T = {sde.T}, got eps={eps}")
    _check_discrete_betas(sde, predictor, corrector)

    prior_key, loop_key = jax.random.split(key)
    x = sde.prior_sample(prior_key, shape)
    timesteps = jnp.linspace(sde.T, eps, num_steps)

    def body(i, carry):
        x, _ = carry
        t = jnp.full((shape[0],), timesteps[i], x.dtype)
        corrector_key, predictor_key = jax.random.split(jax.random.fold_in(loop_key, i))
        x, _ = corrector_fn(sde, score_fn, x, t, corrector_key, snr, n_steps)
        return predictor_fn(sde, score_fn, x, t, predictor_key)

    x, x_mean = jax.lax.fori_loop(0, num_steps, body, (x, x))
    evals_per_step = int(predictor != "none") + int(corrector != "none") * n_steps
    return SampleResult(x_mean if denoise else x, num_steps * evals_per_step)
