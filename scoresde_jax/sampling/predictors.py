"""Predictors: one step of a numerical solver for the reverse-time SDE (paper, Section 4.2).

``predictor(sde, score_fn, x, t, key) -> (x, x_mean)`` moves a batch ``x: [B, ...]`` at time
``t: [B]`` to the next, smaller grid time; ``x_mean`` is the step without its noise (the PC sampler
returns it after the last step). The step size comes from the SDE's ``N``, which must equal the
number of grid points (the PC sampler sees to it).
"""

from __future__ import annotations

import math

import jax

from scoresde_jax.core.sde import batch_mul, reverse_discretize, reverse_drift_diffusion


def _with_noise(key, x, x_mean, std):
    """``(x_mean + std z, x_mean)`` with ``z ~ N(0, I)`` shaped like ``x``."""
    return x_mean + batch_mul(std, jax.random.normal(key, x.shape, x.dtype)), x_mean


def euler_maruyama(sde, score_fn, x, t, key, probability_flow: bool = False):
    """Euler--Maruyama step of the reverse SDE, ``dt = -T / N``: ``x_mean = x + (f - g^2 score)
    dt``, ``x = x_mean + g sqrt(-dt) z`` (with ``probability_flow`` an Euler step of the ODE)."""
    dt = -sde.T / sde.N
    drift, diffusion = reverse_drift_diffusion(sde, score_fn, x, t, probability_flow)
    return _with_noise(key, x, x + drift * dt, diffusion * math.sqrt(-dt))


def reverse_diffusion(sde, score_fn, x, t, key, probability_flow: bool = False):
    """The "reverse diffusion" predictor (paper, Eq. 46): the forward step ``x_{i+1} = x_i + f_i +
    G_i z`` reversed, ``x_i = x_{i+1} - f_{i+1} + G_{i+1}^2 score + G_{i+1} z`` (with
    ``probability_flow`` half the score term and no noise)."""
    rev_f, rev_g = reverse_discretize(sde, score_fn, x, t, probability_flow)
    return _with_noise(key, x, x - rev_f, rev_g)


def ancestral_sampling(sde, score_fn, x, t, key):
    """One step of the discrete chain's posterior with Tweedie's ``x_0``
    (:meth:`~scoresde_jax.core.sde.SDEBase.ancestral_step`: SMLD for VE, DDPM for VP, the
    continuous-time posterior for sub-VP)."""
    x_mean, std = sde.ancestral_step(score_fn(x, t), x, t)
    return _with_noise(key, x, x_mean, std)


def none_predictor(sde, score_fn, x, t, key):
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
