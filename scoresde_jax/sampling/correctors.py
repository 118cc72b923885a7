"""Correctors: score-based MCMC that pulls ``x`` towards ``p_t`` at a fixed time (paper, Sec. 4.2).

Every corrector has the signature
``corrector(sde, score_fn, x, t, key, snr, n_steps) -> (x, x_mean)``: it runs ``n_steps`` steps
of Langevin dynamics at time ``t: [B]`` and returns the final state and its noise-free mean.
``snr`` is the target signal-to-noise ratio ``||step * score|| / ||noise||`` (paper, Algorithm 4
and 5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import SDE, ScoreFn, batch_mul

__all__ = ["CORRECTORS", "annealed_langevin", "langevin", "none_corrector"]


def _per_example_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=-1))


def _langevin_steps(score_fn, x, t, key, n_steps, step_size):
    """``n_steps`` of ``x <- x + step score + sqrt(2 step) z``; returns ``(x, x_mean)``.

    ``step_size(score, noise)`` gives the step (a scalar or one per example).
    """

    def body(i, carry):
        x, _ = carry
        score = score_fn(x, t)
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        step = step_size(score, noise)
        x_mean = x + batch_mul(step, score)
        return x_mean + batch_mul(jnp.sqrt(2.0 * step), noise), x_mean

    return jax.lax.fori_loop(0, n_steps, body, (x, x))


def langevin(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    t: jax.Array,
    key: jax.Array,
    snr: float,
    n_steps: int,
) -> tuple[jax.Array, jax.Array]:
    """Langevin corrector with the step size set by a target signal-to-noise ratio.

    Each step draws ``z ~ N(0, I)`` and uses
    ``step = 2 alpha (snr ||z|| / ||score||)^2``, ``x_mean = x + step score``,
    ``x = x_mean + sqrt(2 step) z``. The norms are per-example L2 norms averaged over the whole
    batch, as in the paper's code; ``jnp.mean`` over a batch sharded across devices is a global
    mean, so a sharded run takes the same steps as an unsharded one.
    """
    alpha = sde.discrete_alpha(t)

    def step_size(score, noise):
        score_norm = jnp.mean(_per_example_norm(score))
        noise_norm = jnp.mean(_per_example_norm(noise))
        return 2.0 * alpha * (snr * noise_norm / score_norm) ** 2

    return _langevin_steps(score_fn, x, t, key, n_steps, step_size)


def annealed_langevin(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    t: jax.Array,
    key: jax.Array,
    snr: float,
    n_steps: int,
) -> tuple[jax.Array, jax.Array]:
    """Annealed Langevin dynamics (NCSN): ``step = 2 alpha (snr sigma_t)^2``.

    ``sigma_t`` is the std of the perturbation kernel at ``t``; the rest is as in
    :func:`langevin`. For a Gaussian of variance ``sigma_t^2`` the expected score norm is
    ``||z|| / sigma_t``, so this is the Langevin corrector with that estimate in place of the
    measured norms.
    """
    alpha = sde.discrete_alpha(t)
    sigma = sde.marginal_coeffs(t)[1]
    step = 2.0 * alpha * (snr * sigma) ** 2
    return _langevin_steps(score_fn, x, t, key, n_steps, lambda score, noise: step)


def none_corrector(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    t: jax.Array,
    key: jax.Array,
    snr: float,
    n_steps: int,
) -> tuple[jax.Array, jax.Array]:
    """Leaves ``x`` unchanged (predictor-only sampling); evaluates no score."""
    del sde, score_fn, t, key, snr, n_steps
    return x, x


CORRECTORS = {
    "langevin": langevin,
    "ald": annealed_langevin,
    "none": none_corrector,
}
"""Corrector name -> ``corrector(sde, score_fn, x, t, key, snr, n_steps) -> (x, x_mean)``."""
