"""Score matching without a denoising target, minimized by the score of the law of ``x``:

* ISM (Hyvärinen 2005, "Estimation of non-normalized statistical models by score matching",
  Thm. 1): ``E[tr(grad_x s) + 1/2 ||s||^2] = 1/2 E||s - grad log p||^2 + const``, the trace exact
  (one JVP per dimension) or Hutchinson's ``E_v[v^T grad_x s v]``.
* SSM (Song et al. 2019, "Sliced score matching", Eq. 7, 8): ``E_v[v^T grad_x s v + 1/2
  (v^T s)^2]``, ``E[v v^T] = I``; SSM-VR ``E_v[v^T grad_x s v] + 1/2 ||s||^2`` (Hutchinson ISM).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.core.score import ModelFn, get_score_fn
from scoresde_jax.core.sde import SDE, batch_mul, importance_sample_t

ScoreAt = Callable[[jax.Array], jax.Array]


# Largest data dimension allowed for the exact trace: it costs D Jacobian-vector products per
# example (784 network passes per step on MNIST, 3072 on CIFAR-10).
EXACT_TRACE_MAX_DIM = 256

# Projection law -> draw(key, shape); both have E[v v^T] = I.
PROJECTIONS: dict[str, Callable] = {
    "rademacher": functools.partial(jax.random.rademacher, dtype=jnp.float32),
    "gaussian": jax.random.normal,
}


def _flat_dot(a: jax.Array, b: jax.Array, batch_axes: int) -> jax.Array:
    """Per-example dot product over the axes after the first ``batch_axes``: a contraction, as
    with jax 0.10.2 XLA:CPU's YNN "reduce" fusion miscompiled ``sum(a * b)`` under ``jax.hessian``
    (and its gradient when the operand was a large compile-time constant)."""
    a = a.reshape(*a.shape[:batch_axes], -1)
    b = b.reshape(*b.shape[:batch_axes], -1)
    return jnp.einsum("...k,...k->...", a, b)


def _score_and_jvps(score_at: ScoreAt, x: jax.Array, tangents: jax.Array):
    """``s(x)`` and ``grad_x s(x) v`` for each ``v`` of ``tangents [M, B, ...]``, from one
    ``jax.linearize`` (one network evaluation)."""
    s, jvp_fn = jax.linearize(score_at, x)
    return s, jax.vmap(jvp_fn)(tangents)


def implicit_score_matching(
    score_at: ScoreAt,
    x: jax.Array,
    key: jax.Array | None = None,
    *,
    exact_trace: bool = True,
    num_probes: int = 1,
    noise: str = "rademacher",
) -> jax.Array:
    """Hyvärinen's objective per example ``[B]``, ``tr(grad_x s(x)) + 1/2 ||s(x)||^2``, for a
    ``score_at`` acting per example: the exact trace (``D <= EXACT_TRACE_MAX_DIM`` JVPs) or
    Hutchinson's from ``num_probes`` probes of ``key`` (then it is SSM-VR)."""
    if not exact_trace:
        if key is None:
            raise ValueError("Hutchinson's trace estimate (exact_trace=False) needs a PRNG key.")
        return sliced_score_matching(
            score_at, x, key, num_projections=num_probes, noise=noise, variance_reduction=True
        )
    b, d = x.shape[0], math.prod(x.shape[1:])
    if d > EXACT_TRACE_MAX_DIM:
        raise ValueError(
            f"the exact trace of the score's Jacobian needs {d} Jacobian-vector products per "
            f"example for data of shape {tuple(x.shape[1:])} (more than EXACT_TRACE_MAX_DIM = "
            f"{EXACT_TRACE_MAX_DIM}); use Hutchinson's estimate (exact_trace=False, "
            "training.ism_exact_trace=False) or sliced score matching (training.loss='ssm' or "
            "'ssm_vr')."
        )
    # Tangent i is the i-th basis vector in every example; sum_i (grad s e_i)_i is the trace.
    basis = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype)[:, None, :], (d, b, d)).reshape(
        (d, *x.shape)
    )
    s, jv = _score_and_jvps(score_at, x, basis)
    trace = jnp.einsum("ibi->b", jv.reshape(d, b, d))
    return trace + 0.5 * _flat_dot(s, s, 1)


def sliced_score_matching(
    score_at: ScoreAt,
    x: jax.Array,
    key: jax.Array,
    *,
    num_projections: int = 1,
    noise: str = "rademacher",
    variance_reduction: bool = False,
) -> jax.Array:
    """Sliced score matching per example ``[B]`` (Song et al. 2019, Eq. 7; SSM-VR Eq. 8) with
    ``v = PROJECTIONS[noise](key, (M, *x.shape))``: ``mean_m [v_m^T grad_x s v_m + 1/2 (v_m^T
    s)^2]``, or ``mean_m [v_m^T grad_x s v_m] + 1/2 ||s||^2``; both unbiased for ISM."""
    if noise not in PROJECTIONS:
        raise ValueError(
            f"Unknown projection noise {noise!r}; choose one of {sorted(PROJECTIONS)}."
        )
    if num_projections < 1:
        raise ValueError(f"need at least one projection, got num_projections={num_projections}")
    v = PROJECTIONS[noise](key, (num_projections, *x.shape))
    s, jv = _score_and_jvps(score_at, x, v)
    vjv = _flat_dot(v, jv, 2)
    if variance_reduction:
        return jnp.mean(vjv, axis=0) + 0.5 * _flat_dot(s, s, 1)
    m, b = v.shape[:2]
    vs = jnp.einsum("mbk,bk->mb", v.reshape(m, b, -1), s.reshape(b, -1))
    return jnp.mean(vjv + 0.5 * jnp.square(vs), axis=0)


def _objective(name, score_at, x, key, *, exact_trace, num_projections, noise):
    if name == "ism":
        return implicit_score_matching(
            score_at, x, key, exact_trace=exact_trace, num_probes=num_projections, noise=noise
        )
    vr = name == "ssm_vr"
    return sliced_score_matching(
        score_at, x, key, num_projections=num_projections, noise=noise, variance_reduction=vr
    )


# Objective name -> objective(score_at, x, key, *, exact_trace, num_projections, noise).
OBJECTIVES: dict[str, Callable] = {
    n: functools.partial(_objective, n) for n in ("ism", "ssm", "ssm_vr")
}


def _check_importance_sampling(importance_sampling: bool, likelihood_weighting: bool) -> None:
    if importance_sampling and not likelihood_weighting:
        raise ValueError(
            "importance_sampling draws t in proportion to the likelihood weighting g^2/sigma^2 and "
            "is only defined together with likelihood_weighting=True."
        )


def _draw_times(sde: SDE, key: jax.Array, b: int, eps: float, importance_sampling: bool):
    """``(t [b], w)``: uniform on ``[eps, T]`` (``w = None``) or importance-sampled with the
    density ratio ``w`` of :func:`~scoresde_jax.core.sde.importance_sample_t`."""
    if importance_sampling:
        return importance_sample_t(sde, key, (b,), eps)
    return jax.random.uniform(key, (b,), minval=eps, maxval=sde.T), None


def score_matching_loss(
    sde: SDE,
    model_fn: ModelFn,
    batch: jax.Array,
    key: jax.Array,
    *,
    objective: str = "ssm",
    continuous: bool = True,
    likelihood_weighting: bool = False,
    importance_sampling: bool = False,
    reduce_mean: bool = True,
    eps: float = 1e-5,
    fixed_t: float | None = None,
    exact_trace: bool = True,
    num_projections: int = 1,
    noise: str = "rademacher",
) -> tuple[jax.Array, jax.Array]:
    """Noise-conditional ISM or SSM at ``x_t ~ p_t``, a drop-in for the DSM loss: ``(loss,
    per_example [B])``, weighted by DSM's ``sigma_t^2`` (else the smallest noise levels dominate)
    or ``g^2``, times ``2 / D`` with ``reduce_mean``; values can be negative. Draws (stable):
    ``k_t, k_z, k_v = split(key, 3)`` for ``t`` (as in ``sde_loss``), ``z``, projections.
    """

    if objective not in OBJECTIVES:
        raise ValueError(
            f"Unknown score-matching objective {objective!r}; choose one of {sorted(OBJECTIVES)}."
        )
    _check_importance_sampling(importance_sampling, likelihood_weighting)
    if fixed_t is not None and importance_sampling:
        raise ValueError(
            "fixed_t uses one time for every example; it excludes importance_sampling."
        )
    if not continuous and (likelihood_weighting or fixed_t is not None):
        raise ValueError(
            "likelihood_weighting and fixed_t are only defined for continuous time; set "
            "training.continuous=True."
        )
    if fixed_t is not None and not 0 < fixed_t <= sde.T:
        raise ValueError(f"need 0 < fixed_t <= T = {sde.T}, got fixed_t={fixed_t}")
    b = batch.shape[0]
    k_t, k_z, k_v = jax.random.split(key, 3)
    z = jax.random.normal(k_z, batch.shape)
    w = None
    if continuous:
        if fixed_t is None:
            t, w = _draw_times(sde, k_t, b, eps, importance_sampling)
        else:
            t = jnp.full((b,), fixed_t, jnp.float32)
        mean, std = sde.marginal_prob(batch, t)
        x_t = mean + batch_mul(std, z)
        score_fn = get_score_fn(sde, model_fn, continuous=True)
        score_at = lambda y: score_fn(y, t)
    else:
        labels = jax.random.randint(k_t, (b,), 0, sde.N)
        scale, std = sde.discrete_marginal(labels)
        x_t = batch_mul(scale, batch) + batch_mul(std, z)

        def score_at(y):
            return sde.score_from_output(model_fn(y, labels), None, labels, continuous=False)

    if likelihood_weighting:
        weight = jnp.square(sde.drift_diffusion(jnp.zeros_like(batch), t)[1])
    else:
        weight = jnp.square(std)
    per_example = OBJECTIVES[objective](
        score_at, x_t, k_v, exact_trace=exact_trace, num_projections=num_projections, noise=noise
    )
    losses = weight * per_example
    if reduce_mean:
        losses = losses * (2.0 / math.prod(batch.shape[1:]))
    if w is not None:
        losses = w * losses
    return jnp.mean(losses), losses
