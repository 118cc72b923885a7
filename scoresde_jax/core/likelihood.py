"""Exact log-likelihoods and bits/dim from the probability-flow ODE (paper, Sec. 4.3, App. D.2).

The probability-flow ODE ``dx/dt = f~(x, t) = f(x, t) - 1/2 g(t)^2 score(x, t)`` transports the
data distribution ``p_0`` to (approximately) the prior ``p_T``. Along a trajectory the
instantaneous change-of-variables formula gives ``d log p_t(x_t) / dt = -div f~(x_t, t)``, so

    log p_0(x) = log p_T(z) + int_0^T div f~(x_t, t) dt,       z = x_T.

:func:`log_likelihood` integrates the augmented state ``[x_t, int div]`` from ``eps`` to ``T`` in
one adaptive diffrax solve, entirely on the device (no host callbacks, no Python loop), so the
whole computation can live inside ``jax.jit``.

The divergence is either exact (a trace over ``D`` Jacobian-vector products with the basis
vectors; fine for low-dimensional data) or the Hutchinson--Skilling estimate
``div f~ ~= v^T (df~/dx) v`` with ``E[v v^T] = I``. The probes ``v`` are drawn once before the solve
and held fixed along the trajectory, which keeps the ODE smooth for the adaptive solver and makes
the estimate of the *integral* unbiased: ``E_v[v^T (int J dt) v] = int tr J dt``.

Typical use with a network, compiled once per set of static options::

    @jax.jit
    def nll_bits(params, x01, key):
        score_fn = get_score_fn(sde, lambda x, t: model.apply(params, x, t), continuous=True)
        return bits_per_dim(sde, score_fn, x01, key, centered=True).bpd
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

__all__ = [
    "NOISES",
    "BPDResult",
    "LIKELIHOOD_ODE",
    "LikelihoodResult",
    "bits_per_dim",
    "dequantize",
    "drift_and_divergence",
    "log_likelihood",
    "logp_to_bpd",
    "sample_probes",
]

NOISES = ("rademacher", "gaussian")

LIKELIHOOD_ODE = ODEOptions(eps=1e-5, max_steps=16_384)
"""The default solve of :func:`log_likelihood` (``eps = 1e-5`` as in the paper's code)."""


class LikelihoodResult(NamedTuple):
    """Output of :func:`log_likelihood`.

    Attributes:
      logp: ``[B]`` log-density in nats of each example under the probability-flow ODE model;
        NaN where the solver failed (e.g. it ran out of ``max_steps``).
      z: ``[B, ...]`` the latent ``x_T`` each example is mapped to.
      nfe: scalar int, the number of drift (score network) evaluations the solve used.
    """

    logp: jax.Array
    z: jax.Array
    nfe: jax.Array


class BPDResult(NamedTuple):
    """Output of :func:`bits_per_dim`.

    Attributes:
      bpd: ``[B]`` bits per dimension of each 8-bit example (a variational upper bound on the
        discrete model's ``-log2 P(x) / D`` when the data was dequantized).
      logp: ``[B]`` continuous log-density (nats) of the model input, i.e. of the dequantized
        data after scaling to ``[-1, 1]`` when ``centered``.
      z: ``[B, ...]`` latents.
      nfe: scalar int, drift evaluations.
    """

    bpd: jax.Array
    logp: jax.Array
    z: jax.Array
    nfe: jax.Array


def _check_options(*, noise: str, solver: str, num_probes: int, eps: float, T: float) -> None:
    if noise not in NOISES:
        raise ValueError(f"Unknown Hutchinson noise {noise!r}; choose one of {list(NOISES)}.")
    if solver not in SOLVERS or solver == "euler":
        adaptive = sorted(set(SOLVERS) - {"euler"})
        raise ValueError(f"Unknown likelihood ODE solver {solver!r}; choose one of {adaptive}.")
    if (
        isinstance(num_probes, bool)
        or not isinstance(num_probes, numbers.Integral)
        or num_probes < 1
    ):
        raise ValueError(f"num_probes must be a positive integer, got {num_probes!r}.")
    if not 0 <= eps < T:
        raise ValueError(f"eps must lie in [0, T) = [0, {T}), got {eps}.")


def sample_probes(
    key: jax.Array,
    shape: tuple[int, ...],
    *,
    num_probes: int = 1,
    noise: str = "rademacher",
    dtype=jnp.float32,
) -> jax.Array:
    """Draws Hutchinson probes ``[num_probes, *shape]`` with ``E[v v^T] = I``.

    :func:`log_likelihood` calls this with its ``key`` and ``x.shape``, so other code (e.g. a
    benchmark against a host-side solver) can reproduce the exact same probes.

    Args:
      key: PRNG key.
      shape: shape of the data batch ``[B, ...]``; every example gets its own probes.
      num_probes: number of independent probes per example.
      noise: ``"rademacher"`` (entries +-1, the lower-variance choice) or ``"gaussian"``.
      dtype: floating dtype of the probes.
    """
    if noise not in NOISES:
        raise ValueError(f"Unknown Hutchinson noise {noise!r}; choose one of {list(NOISES)}.")
    full_shape = (num_probes, *shape)
    if noise == "rademacher":
        return jax.random.rademacher(key, full_shape, dtype=dtype)
    return jax.random.normal(key, full_shape, dtype=dtype)


def drift_and_divergence(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    t: jax.Array,
    probes: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Probability-flow drift ``[B, ...]`` and its divergence ``[B]`` (exact or Hutchinson).

    All divergence terms come from forward-mode JVPs through one drift evaluation: the tangents
    are vmapped while the primal stays unbatched, so the score network's forward pass runs once
    and only its tangent propagation is repeated per probe.

    Because ``score_fn`` acts on each example separately, the Jacobian of the batched drift is
    block-diagonal, so a tangent that stacks one vector per example yields every example's
    ``J_b v_b`` in a single JVP.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      x: ``[B, ...]`` states.
      t: ``[B]`` times.
      probes: ``[K, B, ...]`` Hutchinson probes; the estimate is the mean over ``K`` of
        ``v^T J v``. ``None`` computes the exact trace with ``D = prod(x.shape[1:])`` JVPs against
        the basis vectors (memory ``O(D^2 B)``: meant for low-dimensional data).

    Returns:
      ``(drift, divergence)``.
    """
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


def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: jax.Array,
    key: jax.Array,
    *,
    exact_trace: bool = False,
    num_probes: int = 1,
    noise: str = "rademacher",
    options: ODEOptions = LIKELIHOOD_ODE,
    **fields,
) -> LikelihoodResult:
    """Log-density of each example under the probability-flow ODE (paper, Eq. 13 and App. D.2).

    Solves ``d[x, l]/dt = [f~(x, t), div f~(x, t)]`` from ``t = eps`` to ``T`` with
    ``x(eps) = x``, ``l(eps) = 0``, and returns
    ``logp = sde.prior_logp(x(T)) + l(T)``: the density the model assigns to ``x`` at time ``eps``
    (no dequantization, no offset). The whole batch is one ODE with a shared adaptive step size
    (error measured as the RMS over all of ``[x, l]``), as in the original implementation.

    Runs fully on the device: wrap it in ``jax.jit`` with ``sde``, ``score_fn`` and the keyword
    options static (e.g. close over them). Calling it eagerly works too but compiles each time.

    Args:
      sde: the forward SDE (its ``prior_logp`` closes the formula).
      score_fn: ``score_fn(x, t) -> score`` acting on each example independently.
      x: ``[B, ...]`` data in the model's input space.
      key: PRNG key for the Hutchinson probes (drawn once with :func:`sample_probes`; unused
        when ``exact_trace``).
      exact_trace: compute the divergence exactly with ``D`` JVPs (low-dimensional data).
      num_probes: Hutchinson probes per example, averaged (variance falls as ``1/K``).
      noise: ``"rademacher"`` or ``"gaussian"`` probes.
      options: the ODE solve (:data:`LIKELIHOOD_ODE`: ``eps=1e-5``, ``rtol=atol=1e-5``,
        ``solver="tsit5"``, ``max_steps=16384``). ``eps`` is the start time (``eps > 0`` avoids
        the singular score at ``t = 0``); the solver must be adaptive (``nfe`` is exact, see
        :mod:`scoresde_jax.core.odeint`); examples get ``logp = NaN`` past ``max_steps``.
      **fields: overrides of ``options``' fields, e.g. ``rtol=1e-4``.

    Returns:
      :class:`LikelihoodResult` ``(logp [B], z [B, ...], nfe [])``.

    Raises:
      ValueError: unknown ``noise`` or ``solver``, ``num_probes < 1`` or ``eps`` outside
        ``[0, T)``.
    """
    options = dataclasses.replace(options, **fields)
    _check_options(
        noise=noise, solver=options.solver, num_probes=num_probes, eps=options.eps, T=sde.T
    )
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    batch = x.shape[0]
    probes = (
        None
        if exact_trace
        else sample_probes(key, x.shape, num_probes=num_probes, noise=noise, dtype=x.dtype)
    )

    def vector_field(t, state, probes):
        x_t, _ = state
        t_vec = jnp.full((batch,), t, dtype=x.dtype)
        return drift_and_divergence(sde, score_fn, x_t, t_vec, probes)

    (z, delta_logp), nfe, ok = odeint.solve(
        vector_field,
        (x, jnp.zeros((batch,), x.dtype)),
        options.eps,
        sde.T,
        options,
        # Probes travel as an argument rather than a closure so diffrax sees them as data.
        args=probes,
    )
    logp = jnp.where(ok, sde.prior_logp(z) + delta_logp, jnp.nan)
    return LikelihoodResult(logp=logp, z=z, nfe=nfe)


def dequantize(key: jax.Array, x: jax.Array) -> jax.Array:
    """Uniform dequantization of 8-bit data given in ``[0, 1]`` as ``x = k / 255``.

    Returns ``y = (255 x + u) / 256`` with ``u ~ U[0, 1)^D`` independent per entry, i.e. a point
    drawn uniformly from the ``k``-th of 256 equal bins of ``[0, 1]``: ``k/256 <= y < (k+1)/256``
    and ``E[y] = (255 x + 1/2) / 256``. ``255 x`` is rounded to the integer ``k`` first so that
    float error in ``k / 255`` cannot move ``y`` into a neighbouring bin.

    Args:
      key: PRNG key.
      x: 8-bit data scaled to ``[0, 1]``, any shape.

    Returns:
      Dequantized data of the same shape, in ``[0, 1)``.
    """
    return _dequantize(key, x)


def _dequantize(key: jax.Array, x: jax.Array) -> jax.Array:
    # Separate from the public name, which bits_per_dim's ``dequantize`` flag shadows.
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    k = jnp.round(x.astype(dtype) * 255)
    u = jax.random.uniform(key, x.shape, dtype=dtype)
    y = (k + u) / 256
    # k + u can round up to k + 1 in float32 when u is within an ulp of 1; keep y in its bin.
    return jnp.minimum(y, jnp.nextafter((k + 1) / 256, jnp.zeros_like(y)))


def logp_to_bpd(
    logp: jax.Array, dim: int, *, data_width: float = 1.0, num_bins: int = 256
) -> jax.Array:
    """Converts a continuous log-density (nats) to the discrete model's bits per dimension.

    With ``u`` the dequantized data in ``[0, 1]^D`` (``num_bins`` bins per axis) and the model
    input ``y = a + data_width * u``, the discrete probability of the bin holding ``u`` obeys
    ``log P(bin) >= E_u[log p_y(y)] + D log(data_width) - D log(num_bins)`` (Jensen; the change of
    variables contributes ``D log(data_width)``). Per dimension and in bits:

        bpd = -logp / (D ln 2) + log2(num_bins) - log2(data_width).

    For 8-bit data in ``[0, 1]`` the offset is 8; centered to ``[-1, 1]`` (width 2) it is 7.

    Args:
      logp: log-density of the model input (nats), any shape.
      dim: ``D``, the number of dimensions ``logp`` is the joint density over.
      data_width: width of the interval the ``[0, 1]`` data was affinely mapped to.
      num_bins: number of quantization levels per dimension.
    """
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
    """Bits per dimension of 8-bit data under the probability-flow ODE model.

    ``key`` is split as ``dequant_key, probe_key = jax.random.split(key)``: ``dequant_key`` drives
    :func:`dequantize` (when ``dequantize``), ``probe_key`` the Hutchinson probes of
    :func:`log_likelihood`. The model input is ``y = u`` or, when ``centered``, ``y = 2 u - 1``
    (``u`` the possibly dequantized data), and ``bpd = logp_to_bpd(logp, D, data_width=w)`` with
    ``w = 2`` if ``centered`` else 1. With dequantization this is the paper's upper bound on the
    discrete negative log-likelihood; without, it is the continuous density reported in bits with
    the same offset (not a bound).

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score`` in the model's input space.
      x01: ``[B, ...]`` 8-bit data scaled to ``[0, 1]`` (``k / 255``).
      key: PRNG key.
      centered: whether the model works on data scaled to ``[-1, 1]``.
      dequantize: add uniform noise within each of the 256 bins first.
      **ode_kwargs: passed to :func:`log_likelihood` (``exact_trace``, ``num_probes``, ``noise``,
        ``options`` and its fields ``eps``, ``rtol``, ``atol``, ``solver``, ``max_steps``).

    Returns:
      :class:`BPDResult` ``(bpd [B], logp [B], z [B, ...], nfe [])``.
    """
    dequant_key, probe_key = jax.random.split(key)
    x01 = jnp.asarray(x01)
    if not jnp.issubdtype(x01.dtype, jnp.floating):
        x01 = x01.astype(jnp.float32)
    u = _dequantize(dequant_key, x01) if dequantize else x01
    y, width = (2 * u - 1, 2.0) if centered else (u, 1.0)
    result = log_likelihood(sde, score_fn, y, probe_key, **ode_kwargs)
    dim = math.prod(x01.shape[1:])
    bpd = logp_to_bpd(result.logp, dim, data_width=width)
    return BPDResult(bpd=bpd, logp=result.logp, z=result.z, nfe=result.nfe)
