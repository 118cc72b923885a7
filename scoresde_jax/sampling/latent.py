"""Latent-space manipulation through the probability-flow ODE (paper, Section 4.3).

The probability-flow ODE is a deterministic, invertible map between data at ``eps`` and latents
at ``T`` (:func:`scoresde_jax.sampling.encode` / :func:`~scoresde_jax.sampling.decode`). Because
it carries the data distribution onto (approximately) the prior, the latents of real data look
like prior samples, and operations that make sense for Gaussian latents carry over to data:

* exact encoding and reconstruction (:func:`round_trip`), up to the solver tolerance;
* interpolation between two data points along a great circle of latent space (:func:`slerp`,
  :func:`interpolate`), which keeps the interpolants at a typical prior norm;
* temperature (:func:`temperature_sample`): decode ``z = mean + tau (z_prior - mean)``.

Temperature. Every SDE here has the prior ``N(0, s^2 I)`` with ``s = sigma_max`` (VE) or ``1``
(VP, sub-VP), so scaling the prior noise by ``tau`` draws latents from ``N(0, tau^2 s^2 I)``,
whose density is proportional to ``p_T(z)^(1 / tau^2)``: a tempered prior, as in Glow. Decoding
pushes it through the flow. For Gaussian data ``N(m, v I)`` the flow is affine (the standardized
coordinate ``(x_t - alpha_t m) / sqrt(alpha_t^2 v + sigma_t^2)`` is constant along it), so for all
three SDEs the samples are ``N(m, tau^2 v I)`` up to the perturbation at ``eps`` and an offset of
``alpha_T m`` in the latent (``alpha_T = 1`` with ``s = sigma_max >> |m|`` for VE, ``alpha_T``
about ``e^-5`` for VP and sub-VP): temperature scales the deviations from the mean. For
multimodal data it is not ``p_0^(1/tau^2)``, since the flow stretches space unevenly:
``tau < 1`` gathers the latents near the prior's centre, whose images are smoother, more
prototypical, lower-contrast samples with less diversity, and ``tau -> 0`` collapses every
sample onto one point, the image of the prior mean; ``tau > 1`` spreads the latents beyond the
typical set and the images into noisier, off-manifold ones. The SDEs differ only in the scale
that ``tau`` multiplies (``sigma_max`` for VE, one for VP and sub-VP), i.e. the temperature is
always measured in units of the prior's standard deviation.

Every function here takes an SDE and a ``score_fn(x, t)`` (network or closed form), is pure and
traces under ``jax.jit``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from scoresde_jax.core.odeint import ODEOptions
from scoresde_jax.core.sde import SDE, ScoreFn, batch_mul
from scoresde_jax.sampling._common import SampleResult
from scoresde_jax.sampling.ode import SAMPLING_ODE, decode, encode

__all__ = [
    "InterpolationResult",
    "RoundTrip",
    "interpolate",
    "prior_moment_zscores",
    "round_trip",
    "slerp",
    "temperature_sample",
]

# Below this angle (radians) between the two latents, or this close to pi, slerp interpolates
# linearly: the great circle is then (numerically) undefined or not unique, and for tiny angles
# linear interpolation differs from slerp by O(angle^2) only.
_PARALLEL_ANGLE = 1e-4


class RoundTrip(NamedTuple):
    """Output of :func:`round_trip`.

    Attributes:
      z: ``[B, ...]`` latents at ``T``.
      x_rec: ``[B, ...]`` the latents decoded back to ``eps``.
      nfe: score evaluations of the encode and the decode solve together.
    """

    z: jax.Array
    x_rec: jax.Array
    nfe: jax.Array


class InterpolationResult(NamedTuple):
    """Output of :func:`interpolate`.

    Attributes:
      x: ``[B, num, ...]`` decoded interpolants; ``x[:, 0]`` and ``x[:, -1]`` are the decoded
        latents of the two endpoints (their reconstructions).
      z: ``[B, num, ...]`` the interpolated latents.
      alphas: ``[num]`` the interpolation weights, ``linspace(0, 1, num)``.
      nfe: score evaluations of the encode and the decode solve together.
    """

    x: jax.Array
    z: jax.Array
    alphas: jax.Array
    nfe: jax.Array


def _safe_norm(sq: jax.Array) -> jax.Array:
    """``sqrt(sq)`` with a finite gradient at ``sq = 0`` (a zero or antiparallel latent)."""
    return jnp.sqrt(jnp.maximum(sq, 1e-30))


def slerp(z0: jax.Array, z1: jax.Array, alpha) -> jax.Array:
    """Spherical interpolation between latents, one great circle per example.

    The direction moves along the great circle between ``u0 = z0 / |z0|`` and ``u1 = z1 / |z1|``
    at constant angular speed, ``u = sin((1 - a) w) / sin(w) u0 + sin(a w) / sin(w) u1`` with
    ``w`` the angle between them (Shoemake 1985; White 2016 for generative latents), and the
    norm moves linearly, ``|z| = (1 - a) |z0| + a |z1|``. The endpoints are exact; for equal norms
    this is the classic slerp and every interpolant keeps that norm (a Gaussian latent's norm
    concentrates near ``sqrt(D)`` prior std, and linear interpolation would cut through the
    low-probability interior). Unlike the classic formula applied to latents of unequal norm,
    the norm stays between the endpoints' even when they point in nearly opposite directions,
    which is common in low dimensions. The angle comes from
    ``w = 2 atan2(|u0 - u1|, |u0 + u1|)``, accurate for nearly parallel latents; below 1e-4 rad,
    or within it of pi (antiparallel: no unique circle), the interpolation is linear, as it is
    when either latent is zero (no direction).

    Args:
      z0: ``[B, ...]`` start latents.
      z1: ``[B, ...]`` end latents, same shape.
      alpha: interpolation weight, a scalar or one per example ``[B]``; 0 gives ``z0``, 1
        gives ``z1``.

    Returns:
      ``[B, ...]`` the interpolants.
    """
    if z0.shape != z1.shape:
        raise ValueError(f"slerp needs latents of one shape, got {z0.shape} and {z1.shape}")
    b = z0.shape[0]
    alpha = jnp.broadcast_to(jnp.asarray(alpha, z0.dtype), (b,))
    flat0, flat1 = z0.reshape(b, -1), z1.reshape(b, -1)
    sq0 = jnp.sum(flat0**2, axis=-1, keepdims=True)
    sq1 = jnp.sum(flat1**2, axis=-1, keepdims=True)
    u0 = flat0 / _safe_norm(sq0)
    u1 = flat1 / _safe_norm(sq1)
    omega = 2 * jnp.arctan2(
        _safe_norm(jnp.sum((u0 - u1) ** 2, axis=-1)), _safe_norm(jnp.sum((u0 + u1) ** 2, axis=-1))
    )
    degenerate = (
        (omega < _PARALLEL_ANGLE)
        | (omega > math.pi - _PARALLEL_ANGLE)
        | (sq0[:, 0] == 0)
        | (sq1[:, 0] == 0)
    )
    # Double-where: the unused branch must stay finite so that gradients do too.
    safe_omega = jnp.where(degenerate, 0.5 * math.pi, omega)
    sin_omega = jnp.sin(safe_omega)
    n0, n1 = _safe_norm(sq0[:, 0]), _safe_norm(sq1[:, 0])
    norm = (1 - alpha) * n0 + alpha * n1
    # z0 and z1 enter through their unit vectors, scaled to the interpolated norm.
    c0 = jnp.where(degenerate, 1 - alpha, norm / n0 * jnp.sin((1 - alpha) * safe_omega) / sin_omega)
    c1 = jnp.where(degenerate, alpha, norm / n1 * jnp.sin(alpha * safe_omega) / sin_omega)
    return batch_mul(c0, z0) + batch_mul(c1, z1)


def round_trip(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    *,
    options: ODEOptions = SAMPLING_ODE,
    **fields,
) -> RoundTrip:
    """Encodes ``x`` to its latents and decodes them back (paper, Section 4.3, exact encoding).

    The probability flow is invertible, so ``x_rec`` equals ``x`` up to the solver tolerance
    (whatever the score function: the map is exact for the model, not for the data).

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      x: data ``[B, ...]`` (model space, at time ``eps``).
      options, fields: the ODE solve, as in :func:`scoresde_jax.sampling.encode`.

    Returns:
      ``RoundTrip(z, x_rec, nfe)``.
    """
    ode = dict(options=options, **fields)
    z, nfe_enc = encode(sde, score_fn, x, **ode)
    x_rec, nfe_dec = decode(sde, score_fn, z, **ode)
    return RoundTrip(z, x_rec, nfe_enc + nfe_dec)


def interpolate(
    sde: SDE,
    score_fn: ScoreFn,
    x0: jax.Array,
    x1: jax.Array,
    num: int,
    *,
    options: ODEOptions = SAMPLING_ODE,
    **fields,
) -> InterpolationResult:
    """Interpolates between data pairs through latent space (paper, Section 4.3 and Figure 4).

    Both endpoints are encoded in one solve, their latents joined by :func:`slerp` at ``num``
    evenly spaced weights, and all interpolants decoded in a second solve.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      x0: ``[B, ...]`` first endpoints.
      x1: ``[B, ...]`` second endpoints, same shape.
      num: number of points per path, endpoints included (at least 2).
      options, fields: the ODE solve, as in :func:`scoresde_jax.sampling.encode`.

    Returns:
      ``InterpolationResult(x [B, num, ...], z [B, num, ...], alphas [num], nfe)``.
    """
    if x0.shape != x1.shape:
        raise ValueError(f"interpolate needs endpoints of one shape, got {x0.shape}, {x1.shape}")
    if num < 2:
        raise ValueError(f"num must be >= 2 (the two endpoints), got {num}")
    ode = dict(options=options, **fields)
    b, rest = x0.shape[0], x0.shape[1:]
    z, nfe_enc = encode(sde, score_fn, jnp.concatenate([x0, x1]), **ode)
    z0, z1 = z[:b], z[b:]
    alphas = jnp.linspace(0.0, 1.0, num, dtype=z.dtype)
    # [num, B, ...] -> [B, num, ...]
    path = jax.vmap(lambda a: slerp(z0, z1, a))(alphas)
    path = jnp.moveaxis(path, 0, 1)
    x, nfe_dec = decode(sde, score_fn, path.reshape(b * num, *rest), **ode)
    return InterpolationResult(x.reshape(b, num, *rest), path, alphas, nfe_enc + nfe_dec)


def temperature_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array,
    shape,
    temperature,
    *,
    options: ODEOptions = SAMPLING_ODE,
    **fields,
) -> SampleResult:
    """Decodes tempered prior samples ``z = tau z_prior`` with the probability-flow ODE.

    The prior of every SDE here is centred at zero, so ``tau z_prior`` is the prior sample
    scaled around the prior mean: ``tau = 1`` is :func:`scoresde_jax.sampling.ode_sample` with the
    same key, ``tau = 0`` decodes the prior mean. See the module docstring for what the
    temperature does to the samples of VE, VP and sub-VP models. Calls with the same key use the
    same base noise for every temperature.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      key: PRNG key of the base prior sample.
      shape: sample shape ``[B, ...]``.
      temperature: ``tau >= 0``, a scalar (may be traced) or one per example ``[B]``.
      options, fields: the ODE solve, as in :func:`scoresde_jax.sampling.ode_sample`.

    Returns:
      ``SampleResult(x, nfe)``: the samples ``[B, ...]`` and the score evaluations of the
      decode.
    """
    z = sde.prior_sample(key, tuple(shape))
    tau = jnp.broadcast_to(jnp.asarray(temperature, z.dtype), (z.shape[0],))
    return decode(sde, score_fn, batch_mul(tau, z), options=options, **fields)


def prior_moment_zscores(z: jax.Array, prior_std: float) -> dict[str, jax.Array]:
    """How far latents ``z`` are from prior samples ``N(0, prior_std^2 I)``, in standard errors.

    Under the hypothesis that the ``n`` rows of ``z`` are independent prior draws, each statistic
    below is approximately standard normal (or, for the maxima over ``D`` dimensions, like the
    largest of ``D`` of them: about 3 for ``D`` in the hundreds):

    * ``mean_max``: ``max_d |mean_d| / (s / sqrt(n))``;
    * ``var_max``: ``max_d |var_d / s^2 - 1| / sqrt(2 / (n - 1))``;
    * ``sq_norm``: ``(mean_b |z_b|^2 / s^2 - D) / sqrt(2 D / n)`` (the chi-square statistic behind
      the prior log-likelihood of the latents).

    Also returns the raw ``mean``, ``std`` (over all entries) and ``prior_logp`` (mean over rows,
    nats) with its expectation under the prior, ``prior_logp_expected``.

    Args:
      z: ``[n, ...]`` latents, ``n >= 2``.
      prior_std: the prior's standard deviation ``s``.

    Returns:
      A dict of scalar arrays.
    """
    n = z.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 latents for moment statistics, got {n}")
    flat = z.reshape(n, -1).astype(jnp.float32)
    d = flat.shape[1]
    s2 = prior_std**2
    mean_d = jnp.mean(flat, axis=0)
    var_d = jnp.var(flat, axis=0, ddof=1)
    sq = jnp.sum(flat**2, axis=-1) / s2
    logp = -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * sq
    return {
        "mean": jnp.mean(flat),
        "std": jnp.std(flat),
        "mean_max": jnp.max(jnp.abs(mean_d)) / (prior_std / math.sqrt(n)),
        "var_max": jnp.max(jnp.abs(var_d / s2 - 1)) / math.sqrt(2 / (n - 1)),
        "sq_norm": (jnp.mean(sq) - d) / math.sqrt(2 * d / n),
        "prior_logp": jnp.mean(logp),
        "prior_logp_expected": jnp.asarray(-0.5 * d * (math.log(2 * math.pi * s2) + 1)),
    }
