"""Langevin dynamics samplers: plain (unadjusted) and annealed (NCSN).

Both step as Song & Ermon (2019), "Generative modeling by estimating gradients of the data
distribution": ``x <- x + (alpha / 2) score(x) + sqrt(alpha) z``, the Euler--Maruyama step of
``dx = 1/2 grad log p dt + dw`` with ``dt = alpha`` (the PC correctors' ``step`` is ``alpha /
2``). At one noise level (:func:`langevin_sample`) chains on a well-separated mixture hardly ever
change modes, so the mode frequencies reflect the starts, not the weights, and the score is poorly
learned between modes; annealing over decreasing levels (:func:`annealed_langevin_sample`) first
spreads the chains over the modes, then refines them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import SDE, ScoreFn
from scoresde_jax.sampling._common import SampleResult, check_shape, tweedie
from scoresde_jax.sampling.grid import annealed_noise_levels

_INITS = ("prior", "uniform")


def _initial_state(sde, key, shape, init, init_range):
    if isinstance(init, str):
        if init == "prior":
            return sde.prior_sample(key, shape)
        if init == "uniform":
            low, high = init_range
            return jax.random.uniform(key, shape, minval=low, maxval=high)
        raise ValueError(f"Unknown init {init!r}; use one of {list(_INITS)} or an array.")
    x = jnp.asarray(init, jnp.float32)
    if x.shape != shape:
        raise ValueError(f"init array has shape {x.shape}, the requested shape is {shape}")
    return x


def langevin_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array,
    shape,
    *,
    step_size: float,
    n_steps: int,
    t: float = 1e-3,
    init: str | jax.Array = "prior",
    init_range: tuple[float, float] = (-1.0, 1.0),
    denoise: bool = False,
) -> SampleResult:
    """Plain (unadjusted) Langevin dynamics at the single noise level of time ``t``.

    ``n_steps`` of ``x <- x + (step_size / 2) score(x, t) + sqrt(step_size) z`` (key
    ``fold_in(key, k)`` at step ``k``) from ``init``: ``"prior"``, ``"uniform"`` on
    ``init_range`` (as NCSN starts) or an array. The chain targets ``p_t`` up to the
    ``O(step_size)`` bias of the unadjusted scheme: a Gaussian direction of variance ``v`` gets
    ``v / (1 - step_size / (4 v))``. ``denoise`` ends with Tweedie's ``(x + sigma_t^2 score) /
    alpha_t``; ``nfe = n_steps + denoise``.
    """
    shape = check_shape(shape)
    if not step_size > 0 or n_steps < 0:
        raise ValueError(f"need step_size > 0 and n_steps >= 0, got {step_size}, {n_steps}")
    if not 0 < t <= sde.T:
        raise ValueError(f"need 0 < t <= T = {sde.T}, got t={t}")
    init_key, loop_key = jax.random.split(key)
    x = _initial_state(sde, init_key, shape, init, init_range)
    tv = jnp.full((shape[0],), t, jnp.float32)
    sqrt_step = math.sqrt(step_size)

    def body(k, x):
        z = jax.random.normal(jax.random.fold_in(loop_key, k), shape)
        return x + (0.5 * step_size) * score_fn(x, tv) + sqrt_step * z

    x = jax.lax.fori_loop(0, n_steps, body, x)
    if denoise:
        x = tweedie(sde, score_fn, x, tv)
    return SampleResult(x, n_steps + int(denoise))


def annealed_langevin_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array,
    shape,
    *,
    num_levels: int = 10,
    n_steps_each: int = 100,
    step_size: float = 2e-5,
    denoise: bool = True,
    sigma_min: float | None = None,
    init: str | jax.Array = "prior",
    init_range: tuple[float, float] = (-1.0, 1.0),
) -> SampleResult:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) on the SDE's noise levels.

    For each level ``sigma_1 > ... > sigma_L`` (:func:`annealed_noise_levels`, time ``t_i``)
    ``n_steps_each`` steps of ``x <- x + (alpha_i / 2) score(x, t_i) + sqrt(alpha_i) z``,
    ``alpha_i = step_size sigma_i^2 / sigma_L^2``: the score of ``p_{t_i}`` is about ``1 /
    sigma_i``, so the ratio of gradient step to noise is the same at every level (NCSN:
    ``step_size = 2e-5`` with ``sigma_L = 0.01``). The PC corrector ``"ald"`` also has ``alpha_i =
    4 a_i snr^2 sigma_i^2`` with ``a_i = 1 - beta_i`` (VP, sub-VP; the paper's Algorithm 5) or 1
    (VE); here the step depends on ``sigma_i`` alone (``1 - beta_i`` lies in ``[0.98, 1]`` with
    the default betas), and for VP / sub-VP the levels are the marginals ``p_{t_i}`` themselves
    (noise floor ``sigma_t``, mean shrinkage included), so NCSN's rule applies with the kernel's
    std. ``denoise`` ends with Tweedie's ``(x + sigma_L^2 score) / alpha_L`` (NCSNv2's last step,
    Song & Ermon 2020). One ``lax.fori_loop``; step ``k`` is at level ``k // n_steps_each``, key
    ``fold_in(key, k)``. ``init`` as in :func:`langevin_sample`; ``nfe = L n_steps_each +
    denoise``.
    """
    shape = check_shape(shape)
    if not step_size > 0 or n_steps_each < 1:
        raise ValueError(
            f"need step_size > 0 and n_steps_each >= 1, got {step_size}, {n_steps_each}"
        )
    ts, sigmas = annealed_noise_levels(sde, num_levels, sigma_min)
    alphas = step_size * jnp.square(sigmas / sigmas[-1])
    init_key, loop_key = jax.random.split(key)
    x = _initial_state(sde, init_key, shape, init, init_range)
    b = shape[0]

    def body(k, x):
        i = k // n_steps_each
        t = jnp.full((b,), ts[i], jnp.float32)
        z = jax.random.normal(jax.random.fold_in(loop_key, k), shape)
        return x + (0.5 * alphas[i]) * score_fn(x, t) + jnp.sqrt(alphas[i]) * z

    x = jax.lax.fori_loop(0, num_levels * n_steps_each, body, x)
    if denoise:
        x = tweedie(sde, score_fn, x, jnp.full((b,), ts[-1], jnp.float32))
    return SampleResult(x, num_levels * n_steps_each + int(denoise))
