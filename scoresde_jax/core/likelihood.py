"""Exact log-likelihoods and bits/dim from the probability-flow ODE (paper, Sec. 4.3, App. D.2).

``log p_0(x) = log p_T(x_T) + int_0^T div f~(x_t, t) dt`` as one diffrax solve of ``[x_t, int
div]``; the divergence is exact or Hutchinson--Skilling with probes held fixed along the path (the
ODE stays smooth for the adaptive solver and ``E_v[v^T (int J dt) v] = int tr J dt``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from scoresde_jax.core import odeint
from scoresde_jax.core.odeint import SOLVERS, ODEOptions
from scoresde_jax.core.sde import SDE, ScoreFn, probability_flow_drift

NOISES = ("rademacher", "gaussian")

# The default solve of log_likelihood (eps = 1e-5 as in the paper's code). Dopri5: on a trained
# MNIST DDPM++ (VP) it took 530 network evaluations for 16 test images where Tsit5 took 836 and
# Bosh3 1,229, at rtol = atol = 1e-5, bits/dim within 1e-3 (BENCHMARKS.md, "Likelihood").
LIKELIHOOD_ODE = ODEOptions(eps=1e-5, solver="dopri5", max_steps=16_384)


class LikelihoodResult(NamedTuple):
    """``logp [B]`` in nats (NaN where the solve failed, e.g. past ``max_steps``), the latents
    ``z = x_T [B, ...]`` and ``nfe``, the number of drift evaluations (scalar)."""

    logp: jax.Array
    z: jax.Array
    nfe: jax.Array


class BPDResult(NamedTuple):
    """``bpd [B]`` (with dequantization an upper bound on the discrete ``-log2 P(x) / D``), the
    model input's continuous ``logp [B]`` (nats), latents ``z`` and ``nfe``."""

    bpd: jax.Array
    logp: jax.Array
    z: jax.Array
    nfe: jax.Array


def sample_probes(
    key: jax.Array,
    shape: tuple[int, ...],
    *,
    num_probes: int = 1,
    noise: str = "rademacher",
    dtype=jnp.float32,
) -> jax.Array:
    """Hutchinson probes ``[num_probes, *shape]`` with ``E[v v^T] = I``: ``"rademacher"`` (+-1,
    lower variance) or ``"gaussian"``; :func:`log_likelihood` draws exactly these."""
    if noise not in NOISES:
        raise ValueError(f"Unknown Hutchinson noise {noise!r}; choose one of {list(NOISES)}.")
    draw = jax.random.rademacher if noise == "rademacher" else jax.random.normal
    return draw(key, (num_probes, *shape), dtype=dtype)


def drift_and_divergence(
    sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, probes: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Probability-flow drift ``[B, ...]`` and divergence ``[B]``: mean ``v^T J v`` over ``probes
    [K, B, ...]``, or the exact trace (memory ``O(D^2 B)``). Tangents are vmapped over one primal;
    the Jacobian is block-diagonal, so one JVP serves the batch."""
    batch = x.shape[0]

    def drift_fn(y):
        return probability_flow_drift(sde, score_fn, y, t)

    if probes is None:
        dim = math.prod(x.shape[1:])
        basis = jnp.eye(dim, dtype=x.dtype).reshape((dim, 1, *x.shape[1:]))
        tangents = jnp.broadcast_to(basis, (dim, *x.shape))
    else:
        if probes.shape[1:] != x.shape:
            raise ValueError(f"probes must have shape [K, *{x.shape}], got {probes.shape}")
        tangents = probes.astype(x.dtype)

    def jvp(v):
        return jax.jvp(drift_fn, (x,), (v,))

    drift, jv = jax.vmap(jvp, out_axes=(None, 0))(tangents)
    quad = jnp.sum((tangents * jv).reshape(tangents.shape[0], batch, -1), axis=-1)  # [K, B]
    # Exact: tr J = sum_i e_i^T J e_i.  Hutchinson: average of the K unbiased estimates.
    divergence = jnp.sum(quad, axis=0) if probes is None else jnp.mean(quad, axis=0)
    return drift, divergence


def _as_float(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    key: jax.Array,
    *,
    exact_trace: bool = False,
    num_probes: int = 1,
    noise: str = "rademacher",
    probes: jax.Array | None = None,
    options: ODEOptions = LIKELIHOOD_ODE,
    **fields,
) -> LikelihoodResult:
    """Log-density ``[B]`` of ``x [B, ...]`` at ``t = eps`` under the probability-flow ODE: one
    adaptive solve of ``[x, l]`` from ``eps`` to ``T`` for the batch, as in the original code;
    ``key`` draws the probes (:func:`sample_probes`) unless ``probes [K, B, ...]`` are given
    (e.g. another implementation's draw). Jit with ``sde``, ``score_fn`` and options static;
    :func:`scoresde_jax.xla_flags.solve_compiler_options` gives the ``jax.jit`` options that
    make the solve fastest on CPU."""
    options = dataclasses.replace(options, **fields)
    if noise not in NOISES:
        raise ValueError(f"Unknown Hutchinson noise {noise!r}; choose one of {list(NOISES)}.")
    if options.solver not in SOLVERS or options.solver == "euler":
        adaptive = sorted(set(SOLVERS) - {"euler"})
        raise ValueError(
            f"Unknown likelihood ODE solver {options.solver!r}; choose one of {adaptive}."
        )
    integral = isinstance(num_probes, numbers.Integral) and not isinstance(num_probes, bool)
    if not (integral and num_probes >= 1):
        raise ValueError(f"num_probes must be a positive integer, got {num_probes!r}.")
    if not 0 <= options.eps < sde.T:
        raise ValueError(f"eps must lie in [0, T) = [0, {sde.T}), got {options.eps}.")
    x = _as_float(x)
    batch = x.shape[0]
    if exact_trace:
        if probes is not None:
            raise ValueError("probes are for the Hutchinson trace; exact_trace=True uses none.")
    elif probes is None:
        probes = sample_probes(key, x.shape, num_probes=num_probes, noise=noise, dtype=x.dtype)
    elif probes.ndim != x.ndim + 1 or probes.shape[1:] != x.shape:
        raise ValueError(f"probes must have shape [K, *{x.shape}], got {probes.shape}.")

    def vector_field(t, state, probes):
        t_vec = jnp.full((batch,), t, dtype=x.dtype)
        return drift_and_divergence(sde, score_fn, state[0], t_vec, probes)

    (z, delta_logp), nfe, ok = odeint.solve(
        vector_field,
        (x, jnp.zeros((batch,), x.dtype)),
        options.eps,
        sde.T,
        options,
        args=probes,  # as an argument rather than a closure, so diffrax sees them as data
    )
    logp = jnp.where(ok, sde.prior_logp(z) + delta_logp, jnp.nan)
    return LikelihoodResult(logp=logp, z=z, nfe=nfe)


def dequantize(key: jax.Array, x: jax.Array) -> jax.Array:
    """Uniform dequantization of 8-bit data ``x = k / 255``: ``y = (k + u) / 256``, ``u ~ U[0, 1)``
    per entry, so ``k/256 <= y < (k+1)/256``. ``k = round(255 x)`` first, so that float error in
    ``k / 255`` cannot move ``y`` into a neighbouring bin."""
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    k = jnp.round(x.astype(dtype) * 255)
    u = jax.random.uniform(key, x.shape, dtype=dtype)
    y = (k + u) / 256
    # k + u can round up to k + 1 in float32 when u is within an ulp of 1; keep y in its bin.
    return jnp.minimum(y, jnp.nextafter((k + 1) / 256, jnp.zeros_like(y)))


_dequantize = dequantize  # bits_per_dim's ``dequantize`` flag shadows the function


def logp_to_bpd(
    logp: jax.Array, dim: int, *, data_width: float = 1.0, num_bins: int = 256
) -> jax.Array:
    """Log-density (nats, over ``dim`` dims) -> bits/dim ``-logp / (D ln 2) + log2(num_bins /
    data_width)`` (Jensen's bound on dequantized data; 8 on ``[0, 1]``, 7 on ``[-1, 1]``)."""
    offset = math.log2(num_bins) - math.log2(data_width)
    return -logp / (dim * math.log(2)) + offset


def bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x01: jax.Array,
    key: jax.Array,
    *,
    centered: bool = False,
    dequantize: bool = True,
    **ode_kwargs,
) -> BPDResult:
    """Bits per dimension of 8-bit data ``x01 = k / 255`` (model input ``u`` or, ``centered``,
    ``2u - 1``): with dequantization the paper's upper bound on the discrete NLL."""

    dequant_key, probe_key = jax.random.split(key)
    x01 = _as_float(x01)
    u = _dequantize(dequant_key, x01) if dequantize else x01
    y, width = (2 * u - 1, 2.0) if centered else (u, 1.0)
    result = log_likelihood(sde, score_fn, y, probe_key, **ode_kwargs)
    bpd = logp_to_bpd(result.logp, math.prod(x01.shape[1:]), data_width=width)
    return BPDResult(bpd=bpd, logp=result.logp, z=result.z, nfe=result.nfe)
