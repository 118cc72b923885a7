"""Correctors: score-based MCMC that pulls ``x`` towards ``p_t`` at a fixed time (paper, Sec. 4.2).

``corrector(sde, score_fn, x, t, key, snr, n_steps) -> (x, x_mean)`` runs ``n_steps`` Langevin
steps at ``t: [B]``; ``snr`` is the target ``||step * score|| / ||noise||`` (Algorithms 4, 5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import batch_mul


def _per_example_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=-1))


def _langevin_steps(score_fn, x, t, key, n_steps, step_size):
    """``n_steps`` of ``x <- x + step score + sqrt(2 step) z`` with ``step = step_size(score,
    noise)`` (a scalar or one per example); returns ``(x, x_mean)``."""

    def body(i, carry):
        x, _ = carry
        score = score_fn(x, t)
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        step = step_size(score, noise)
        x_mean = x + batch_mul(step, score)
        return x_mean + batch_mul(jnp.sqrt(2.0 * step), noise), x_mean

    return jax.lax.fori_loop(0, n_steps, body, (x, x))


def langevin(sde, score_fn, x, t, key, snr, n_steps):
    """Langevin corrector, ``step = 2 alpha (snr ||z|| / ||score||)^2``, the per-example L2 norms
    averaged over the batch as in the paper's code (a global mean also when sharded)."""
    alpha = sde.discrete_alpha(t)

    def step_size(score, noise):
        score_norm = jnp.mean(_per_example_norm(score))
        noise_norm = jnp.mean(_per_example_norm(noise))
        return 2.0 * alpha * (snr * noise_norm / score_norm) ** 2

    return _langevin_steps(score_fn, x, t, key, n_steps, step_size)


def annealed_langevin(sde, score_fn, x, t, key, snr, n_steps):
    """Annealed Langevin dynamics (NCSN), ``step = 2 alpha (snr sigma_t)^2``: :func:`langevin`
    with the expected score norm ``||z|| / sigma_t`` of a Gaussian of std ``sigma_t`` (the
    kernel's) in place of the measured one."""
    alpha = sde.discrete_alpha(t)
    step = 2.0 * alpha * (snr * sde.marginal_coeffs(t)[1]) ** 2
    return _langevin_steps(score_fn, x, t, key, n_steps, lambda score, noise: step)


def none_corrector(sde, score_fn, x, t, key, snr, n_steps):
    """Leaves ``x`` unchanged (predictor-only sampling); evaluates no score."""
    del sde, score_fn, t, key, snr, n_steps
    return x, x


CORRECTORS = {"langevin": langevin, "ald": annealed_langevin, "none": none_corrector}
"""Corrector name -> ``corrector(sde, score_fn, x, t, key, snr, n_steps) -> (x, x_mean)``."""
