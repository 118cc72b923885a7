"""Langevin dynamics samplers: plain (unadjusted) and annealed (NCSN).

Both use the step convention of Song & Ermon (2019), "Generative modeling by estimating gradients
of the data distribution":

    x <- x + (alpha / 2) score(x) + sqrt(alpha) z,    z ~ N(0, I),

which is the Euler--Maruyama step of the Langevin diffusion ``dx = 1/2 grad log p dt + dw`` with
``dt = alpha``. (The PC correctors of :mod:`scoresde_jax.sampling.correctors` write the same step
as ``x + step score + sqrt(2 step) z``, so ``step = alpha / 2``.)

* :func:`langevin_sample` runs Langevin dynamics at one noise level ``t``. With the exact score of
  a well-separated mixture it mixes inside each mode but hardly ever between modes, so the mode
  frequencies reflect where the chains started rather than the mixture weights; and in the low
  density regions between the modes the score is poorly learned. Both problems motivate
* :func:`annealed_langevin_sample`, NCSN's Algorithm 1: ``T`` Langevin steps at each of ``L``
  decreasing noise levels ``sigma_1 > ... > sigma_L`` with steps
  ``alpha_i = step_size * sigma_i^2 / sigma_L^2``, so that large noise levels (where the modes
  overlap) distribute the chains between the modes before small ones refine them; then
  optionally NCSNv2's denoising step (Song & Ermon 2020, "Improved techniques for training
  score-based generative models").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import SDE, ScoreFn, batch_mul
from scoresde_jax.sampling._common import SampleResult, check_shape
from scoresde_jax.sampling.grid import annealed_noise_levels

__all__ = ["annealed_langevin_sample", "langevin_sample"]

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


def _tweedie(sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array) -> jax.Array:
    """``E[x_0 | x_t] = (x_t + sigma_t^2 score(x_t, t)) / alpha_t`` (Tweedie's formula)."""
    alpha, sigma = sde.marginal_coeffs(t)
    return batch_mul(1.0 / alpha, x + batch_mul(jnp.square(sigma), score_fn(x, t)))


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

    ``x <- x + (step_size / 2) score(x, t) + sqrt(step_size) z`` for ``n_steps`` steps, one
    ``lax.fori_loop`` with the key of step ``k`` equal to ``fold_in(key, k)``. The chain targets
    ``p_t`` up to the ``O(step_size)`` bias of the unadjusted discretization: for a Gaussian of
    variance ``v`` along some direction the stationary variance is ``v / (1 - step_size / (4 v))``.

    Args:
      sde: the forward SDE (supplies the prior and, for ``denoise``, the kernel at ``t``).
      score_fn: ``score_fn(x, t) -> score``.
      key: PRNG key.
      shape: sample shape ``[B, ...]``.
      step_size: ``epsilon`` of the update (a variance: the injected noise has std
        ``sqrt(step_size)``).
      n_steps: number of Langevin steps.
      t: the time whose perturbed marginal ``p_t`` is sampled (small: data plus little noise).
      init: ``"prior"`` (``sde.prior_sample``), ``"uniform"`` (uniform on ``init_range``, as NCSN
        starts its chains) or an array of ``shape``.
      init_range: bounds of the uniform initialization.
      denoise: finish with Tweedie's step ``(x + sigma_t^2 score) / alpha_t``.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe = n_steps + denoise``.

    Raises:
      ValueError: for non-positive step size, negative ``n_steps``, a ``t`` outside ``(0, T]``, or
        a bad ``init`` or shape.
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
        x = _tweedie(sde, score_fn, x, tv)
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

    For ``i = 1..L`` (``sigma_1 > ... > sigma_L``, :func:`annealed_noise_levels`) run
    ``n_steps_each`` steps of ``x <- x + (alpha_i / 2) score(x, t_i) + sqrt(alpha_i) z`` with
    ``alpha_i = step_size * sigma_i^2 / sigma_L^2``. The step grows with ``sigma_i^2`` because the
    score of ``p_{t_i}`` has magnitude about ``1 / sigma_i``: the ratio of the gradient step to the
    noise, ``(alpha_i / 2) ||score|| / sqrt(alpha_i)``, then stays the same at every level.

    The PC corrector ``"ald"`` uses the same rule, ``step = 2 a_i (snr sigma_t)^2`` in its
    convention (``alpha = 2 step``, so ``alpha_i = 4 a_i snr^2 sigma_i^2``), where
    ``a_i = 1 - beta_i`` for VP / sub-VP (the paper's Algorithm 5) and 1 for VE. Here the step
    depends on ``sigma_i`` alone: ``1 - beta_i`` lies in ``[0.98, 1]`` with the default betas, and
    for VP / sub-VP the levels are the perturbed marginals ``p_{t_i}`` themselves
    (``x_t = alpha_t x_0 + sigma_t z``, whose noise floor is ``sigma_t``), so NCSN's rule applies
    unchanged with ``sigma_i`` the kernel's std: the chains start from the prior ``N(0, I)``
    (``sigma_1 ≈ 1``) and every level's Langevin chain targets ``p_{t_i}``, mean shrinkage
    included. The levels are geometric in ``sigma`` for every SDE (see
    :func:`annealed_noise_levels` for why not a uniform time grid).

    With ``denoise`` the result is Tweedie's estimate ``(x + sigma_L^2 score(x, t_L)) / alpha_L``
    (for VE NCSNv2's final step ``x + sigma_L^2 score``), which removes the last level's noise.

    One ``lax.fori_loop`` over all ``L * n_steps_each`` steps; step ``k`` is at level
    ``k // n_steps_each`` with key ``fold_in(key, k)``.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      key: PRNG key.
      shape: sample shape ``[B, ...]``.
      num_levels: ``L``.
      n_steps_each: ``T``, steps per level.
      step_size: ``epsilon``, the step at the smallest level (NCSN: ``2e-5`` with
        ``sigma_L = 0.01``, i.e. ``alpha_i = 0.2 sigma_i^2``).
      denoise: finish with the denoising step.
      sigma_min: the smallest level ``sigma_L`` (see :func:`annealed_noise_levels`; ``None``:
        ``sde.sigma_min`` for VE, 0.01 for VP and sub-VP).
      init: ``"prior"``, ``"uniform"`` on ``init_range`` (NCSN's choice for images in [0, 1]) or
        an array of ``shape``.
      init_range: bounds of the uniform initialization.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe = L * n_steps_each + denoise``.
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
        x = _tweedie(sde, score_fn, x, jnp.full((b,), ts[-1], jnp.float32))
    return SampleResult(x, num_levels * n_steps_each + int(denoise))
