"""Predictors: one step of a numerical solver for the reverse-time SDE (paper, Section 4.2).

Every predictor has the signature ``predictor(sde, score_fn, x, t, key) -> (x, x_mean)``: ``x`` is
a batch ``[B, ...]`` at time ``t: [B]`` and the step moves it to the next, smaller time of the
sampling grid. ``x_mean`` is the same step without its injected noise; the PC sampler returns it
after the last step ("denoising"). The SDE's ``N`` sets the step size, so ``N`` must equal the
number of grid points (the PC sampler takes care of that).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import (
    SDE,
    VESDE,
    VPSDE,
    ScoreFn,
    batch_mul,
    reverse_discretize,
    reverse_drift_diffusion,
)
from scoresde_jax.sampling._common import step_index

__all__ = [
    "FLOW_PREDICTORS",
    "PREDICTORS",
    "ancestral_sampling",
    "euler_maruyama",
    "gaussian_posterior",
    "none_predictor",
    "reverse_diffusion",
]


def euler_maruyama(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    t: jax.Array,
    key: jax.Array,
    probability_flow: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Euler--Maruyama step of the reverse SDE with ``dt = -T / N``.

    ``x_mean = x + (f - g^2 score) dt`` and ``x = x_mean + g sqrt(-dt) z``. With
    ``probability_flow`` it is an Euler step of the probability-flow ODE instead
    (``f - g^2 score / 2``, no noise).
    """
    dt = -sde.T / sde.N
    drift, diffusion = reverse_drift_diffusion(sde, score_fn, x, t, probability_flow)
    x_mean = x + drift * dt
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x_mean + batch_mul(diffusion * math.sqrt(-dt), noise), x_mean


def reverse_diffusion(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    t: jax.Array,
    key: jax.Array,
    probability_flow: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The "reverse diffusion" predictor (paper, Eq. 46): the SDE's own discretization, reversed.

    With the forward step ``x_{i+1} = x_i + f_i + G_i z``, the reverse step is
    ``x_i = x_{i+1} - f_{i+1} + G_{i+1}^2 score + G_{i+1} z``; with ``probability_flow`` the
    score term is halved and no noise is added (the discretized probability-flow ODE).
    """
    rev_f, rev_g = reverse_discretize(sde, score_fn, x, t, probability_flow)
    x_mean = x - rev_f
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x_mean + batch_mul(rev_g, noise), x_mean


def gaussian_posterior(
    sde: SDE, score: jax.Array, x: jax.Array, t: jax.Array, s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and std of ``p(x_s | x_t)`` for the Gaussian chain whose marginals match the SDE's.

    Take ``(a, sig) = sde.marginal_coeffs`` so that ``x_t = a_t x_0 + sig_t z``, and ``s < t``.
    The Markov chain ``x_t = a_ts x_s + sqrt(var_ts) z`` with ``a_ts = a_t / a_s`` and
    ``var_ts = sig_t^2 - a_ts^2 sig_s^2`` has exactly those marginals. Its posterior given
    ``x_0`` is Gaussian, and replacing ``x_0`` by Tweedie's estimate
    ``x0_hat = (x_t + sig_t^2 score) / a_t`` gives

        mean = (a_s var_ts / sig_t^2) x0_hat + (a_ts sig_s^2 / sig_t^2) x_t,
        var  = var_ts sig_s^2 / sig_t^2.

    Substituting ``x0_hat`` the coefficient of ``x_t`` collapses to ``1 / a_ts``, so the mean is
    computed as ``(x_t + var_ts score) / a_ts``, which needs no division by ``sig_t^2`` (tiny near
    ``t = 0`` for sub-VP). For VE (``a = 1``) this is the SMLD ancestral step,
    ``mean = x + (sig_t^2 - sig_s^2) score``, ``var = sig_s^2 (sig_t^2 - sig_s^2) / sig_t^2``;
    for VP with one DDPM step (``a_ts^2 = 1 - beta``, ``var_ts = beta``) the mean is DDPM's
    ``(x + beta score) / sqrt(1 - beta)``.

    Args:
      sde: the forward SDE (any with ``marginal_coeffs``).
      score: the score at ``(x, t)``, ``[B, ...]``.
      x: the current state ``x_t``, ``[B, ...]``.
      t: current times ``[B]``.
      s: earlier times ``[B]`` with ``0 <= s < t``.

    Returns:
      ``(mean [B, ...], std [B])``.
    """
    a_t, sig_t = sde.marginal_coeffs(t)
    a_s, sig_s = sde.marginal_coeffs(s)
    a_ts = a_t / a_s
    # Rounding can make the difference slightly negative when s and t are close.
    var_ts = jnp.maximum(sig_t**2 - a_ts**2 * sig_s**2, 0.0)
    mean = batch_mul(1.0 / a_ts, x + batch_mul(var_ts, score))
    std = jnp.sqrt(var_ts * sig_s**2 / sig_t**2)
    return mean, std


def ancestral_sampling(
    sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling: one step of the discrete chain's posterior with Tweedie's ``x_0``.

    * VE (SMLD): ``x_mean = x + (sigma_i^2 - sigma_{i-1}^2) score``,
      ``std = sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2)`` on the SDE's discrete
      noise levels (``sigma_{-1} = 0``).
    * VP (DDPM): ``x_mean = (x + beta_i score) / sqrt(1 - beta_i)``, ``std = sqrt(beta_i)``.
    * sub-VP (and any other SDE): the continuous-time posterior of :func:`gaussian_posterior`
      between ``t`` and ``s = max(t - T/N, 0)``. The original code has no ancestral sampler for
      sub-VP; this one is the same construction, and for VE it reduces to the SMLD formula above.

    Here ``i = floor(t (N - 1) / T)``.
    """
    noise = jax.random.normal(key, x.shape, x.dtype)
    score = score_fn(x, t)
    if isinstance(sde, VESDE):
        idx = step_index(t, sde.N, sde.T)
        sigmas = sde.discrete_sigmas
        sigma = sigmas[idx]
        prev = jnp.where(idx == 0, 0.0, sigmas[jnp.maximum(idx - 1, 0)])
        x_mean = x + batch_mul(sigma**2 - prev**2, score)
        std = jnp.sqrt(prev**2 * (sigma**2 - prev**2) / sigma**2)
    elif isinstance(sde, VPSDE):
        beta = sde.discrete_betas[step_index(t, sde.N, sde.T)]
        x_mean = batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score))
        std = jnp.sqrt(beta)
    else:
        s = jnp.maximum(t - sde.T / sde.N, 0.0)
        x_mean, std = gaussian_posterior(sde, score, x, t, s)
    return x_mean + batch_mul(std, noise), x_mean


def none_predictor(
    sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Leaves ``x`` unchanged (corrector-only sampling); evaluates no score."""
    del sde, score_fn, t, key
    return x, x


PREDICTORS = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral_sampling": ancestral_sampling,
    "none": none_predictor,
}
"""Predictor name -> ``predictor(sde, score_fn, x, t, key) -> (x, x_mean)``."""

FLOW_PREDICTORS = ("euler_maruyama", "reverse_diffusion", "none")
"""Predictors that accept ``probability_flow=True`` (a deterministic step of the ODE)."""
