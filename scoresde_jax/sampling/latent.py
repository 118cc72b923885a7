"""Latent-space manipulation through the probability-flow ODE (paper, Section 4.3): exact
encoding (:func:`round_trip`), interpolation along great circles (:func:`slerp`,
:func:`interpolate`) and temperature (:func:`temperature_sample`).

Temperature ``tau`` draws the prior ``N(0, tau^2 s^2 I)`` (density ``~ p_T^(1/tau^2)``, as in
Glow); for Gaussian data ``N(m, v I)`` the flow is affine, so samples are ``N(m, tau^2 v I)`` up to
the ``eps`` perturbation and a latent offset ``alpha_T m``; for multimodal data ``tau < 1`` gives
smoother, less diverse samples, ``tau > 1`` noisier ones.
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

# Below this angle (radians), or this close to pi, slerp is linear: the great circle is then
# undefined or not unique, and for tiny angles the two differ by O(angle^2) only.
_PARALLEL_ANGLE = 1e-4


class RoundTrip(NamedTuple):
    """Latents ``z`` at ``T``, their decoding ``x_rec`` at ``eps``, and both solves' ``nfe``."""

    z: jax.Array
    x_rec: jax.Array
    nfe: jax.Array


class InterpolationResult(NamedTuple):
    """Decoded interpolants ``x [B, num, ...]`` (the ends: the endpoints' reconstructions), their
    latents ``z [B, num, ...]``, the weights ``alphas = linspace(0, 1, num)``, both solves' nfe."""

    x: jax.Array
    z: jax.Array
    alphas: jax.Array
    nfe: jax.Array


def _safe_norm(sq: jax.Array) -> jax.Array:
    """``sqrt(sq)`` with a finite gradient at ``sq = 0`` (a zero or antiparallel latent)."""
    return jnp.sqrt(jnp.maximum(sq, 1e-30))


def slerp(z0: jax.Array, z1: jax.Array, alpha) -> jax.Array:
    """Spherical interpolation of latents ``[B, ...]`` by ``alpha`` (scalar or ``[B]``): the
    direction along the great circle (Shoemake 1985; White 2016), the norm linearly, so it stays
    between the endpoints'. The angle is ``2 atan2(|u0 - u1|, |u0 + u1|)`` (accurate when nearly
    parallel); within 1e-4 rad of 0 or pi, or for a zero latent, it is linear.
    """
    if z0.shape != z1.shape:
        raise ValueError(f"slerp needs latents of one shape, got {z0.shape} and {z1.shape}")
    b = z0.shape[0]
    alpha = jnp.broadcast_to(jnp.asarray(alpha, z0.dtype), (b,))
    flat0, flat1 = z0.reshape(b, -1), z1.reshape(b, -1)
    sq0 = jnp.sum(flat0**2, axis=-1, keepdims=True)
    sq1 = jnp.sum(flat1**2, axis=-1, keepdims=True)
    u0, u1 = flat0 / _safe_norm(sq0), flat1 / _safe_norm(sq1)

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
    """Encodes data ``x`` (at ``eps``) and decodes it back (paper, Section 4.3, exact encoding);
    ``x_rec = x`` up to the solver tolerance, whatever the score. ODE options as in ``encode``."""
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
    """Interpolates between data pairs through latent space (paper, Section 4.3 and Figure 4):
    one encode of both ends, :func:`slerp` at ``num >= 2`` weights, one decode of all points."""
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
    """Decodes ``tau z_prior`` (``tau >= 0``, scalar or ``[B]``) with the probability-flow ODE;
    ``tau = 1`` is ``ode_sample`` with the same key."""
    z = sde.prior_sample(key, tuple(shape))
    tau = jnp.broadcast_to(jnp.asarray(temperature, z.dtype), (z.shape[0],))
    return decode(sde, score_fn, batch_mul(tau, z), options=options, **fields)


def prior_moment_zscores(z: jax.Array, prior_std: float) -> dict[str, jax.Array]:
    """How far latents ``z [n >= 2, ...]`` are from ``N(0, prior_std^2 I)`` draws, in standard
    errors (``mean_max``, ``var_max``: maxima over ``D`` dims, about 3 for ``D`` in the hundreds;
    ``sq_norm``: the chi-square of the prior log-likelihood); also ``mean``, ``std``,
    ``prior_logp`` (mean over rows, nats) and ``prior_logp_expected``.
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
