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

from scoresde_jax.core.sde import (
    SDE,
    ScoreFn,
    batch_mul,
    reverse_discretize,
    reverse_drift_diffusion,
)

__all__ = [
    "FLOW_PREDICTORS",
    "PREDICTORS",
    "ancestral_sampling",
    "euler_maruyama",
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


def ancestral_sampling(
    sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling: one step of the discrete chain's posterior with Tweedie's ``x_0``
    (:meth:`~scoresde_jax.core.sde.SDEBase.ancestral_step`: SMLD for VE, DDPM for VP, the
    continuous-time posterior for sub-VP)."""
    noise = jax.random.normal(key, x.shape, x.dtype)
    x_mean, std = sde.ancestral_step(score_fn(x, t), x, t)
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
