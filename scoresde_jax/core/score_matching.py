"""Score matching without a denoising target: implicit and sliced score matching.

These objectives need only the model ``s`` and its Jacobian, and are minimized by the score of
whatever distribution the points ``x`` come from:

* Implicit score matching (Hyvärinen 2005, "Estimation of non-normalized statistical models by
  score matching", Theorem 1): ``J(s) = E[tr(grad_x s(x)) + 1/2 ||s(x)||^2]``, equal to
  ``1/2 E||s(x) - grad log p(x)||^2`` up to a constant. The trace is exact (one Jacobian-vector
  product per input dimension) or Hutchinson's estimate ``E_v[v^T grad_x s v]``.
* Sliced score matching (Song et al. 2019, "Sliced score matching: a scalable approach to density
  and score estimation", Eq. 7 and Eq. 8): ``E_v[v^T grad_x s v + 1/2 (v^T s)^2]`` with random
  projections ``E[v v^T] = I``, and SSM-VR ``E_v[v^T grad_x s v] + 1/2 ||s||^2``, which
  integrates the second term out (SSM-VR is Hutchinson-trace ISM).

Each projection costs one forward-mode product (``jax.linearize`` once, then a ``vmap``).
:func:`score_matching_loss` applies them to data perturbed by the SDE's kernel at a random ``t``,
so the minimizer is the score of ``p_t``: the target of DSM, reached without the kernel's score.
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

__all__ = [
    "EXACT_TRACE_MAX_DIM",
    "OBJECTIVES",
    "PROJECTIONS",
    "ScoreAt",
    "implicit_score_matching",
    "score_matching_loss",
    "sliced_score_matching",
]

EXACT_TRACE_MAX_DIM = 256
"""Largest data dimension for which the exact trace is allowed: it costs ``D`` Jacobian-vector
products per example (784 network passes per step on MNIST, 3072 on CIFAR-10)."""

PROJECTIONS: dict[str, Callable] = {
    "rademacher": functools.partial(jax.random.rademacher, dtype=jnp.float32),
    "gaussian": jax.random.normal,
}
"""Projection law -> ``draw(key, shape)``; both have ``E[v v^T] = I``."""


def _flat_dot(a: jax.Array, b: jax.Array, batch_axes: int) -> jax.Array:
    """Per-example dot product of ``a`` and ``b`` over all axes after the first ``batch_axes``.

    Written as a contraction (``dot_general``) rather than ``sum(a * b)``: with jax 0.10.2,
    XLA:CPU's YNN "reduce" fusion miscompiled the multiply-then-sum form under ``jax.hessian``
    (and its gradient when the operand was a large compile-time constant).
    """
    a = a.reshape(*a.shape[:batch_axes], -1)
    b = b.reshape(*b.shape[:batch_axes], -1)
    return jnp.einsum("...k,...k->...", a, b)


def _score_and_jvps(score_at: ScoreAt, x: jax.Array, tangents: jax.Array):
    """``s(x)`` and ``grad_x s(x) v`` for each ``v`` in ``tangents: [M, B, ...]``; the ``M``
    products share the residuals of one network evaluation."""
    s, jvp_fn = jax.linearize(score_at, x)
    return s, jax.vmap(jvp_fn)(tangents)


def _hutchinson_terms(score_at, x, key, num, noise):
    """``(s, v_m^T grad s v_m [M, B], v [M, B, ...])`` for ``num`` projections ``v_m``."""
    if noise not in PROJECTIONS:
        raise ValueError(
            f"Unknown projection noise {noise!r}; choose one of {sorted(PROJECTIONS)}."
        )
    if num < 1:
        raise ValueError(f"need at least one projection, got num_projections={num}")
    v = PROJECTIONS[noise](key, (num, *x.shape))
    s, jv = _score_and_jvps(score_at, x, v)
    return s, _flat_dot(v, jv, 2), v


def implicit_score_matching(
    score_at: ScoreAt,
    x: jax.Array,
    key: jax.Array | None = None,
    *,
    exact_trace: bool = True,
    num_probes: int = 1,
    noise: str = "rademacher",
) -> jax.Array:
    """Hyvärinen's objective per example ``[B]``: ``tr(grad_x s(x)) + 1/2 ||s(x)||^2``.

    ``score_at`` must treat the examples of ``x [B, ...]`` independently. With ``exact_trace``
    the trace takes ``D`` forward-mode products (at most :data:`EXACT_TRACE_MAX_DIM`); otherwise
    it is Hutchinson's estimate from ``num_probes`` probes drawn from ``key`` (then this is
    SSM-VR).
    """
    if not exact_trace:
        if key is None:
            raise ValueError("Hutchinson's trace estimate (exact_trace=False) needs a PRNG key.")
        s, vjv, _ = _hutchinson_terms(score_at, x, key, num_probes, noise)
        return jnp.mean(vjv, axis=0) + 0.5 * _flat_dot(s, s, 1)
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
    """Sliced score matching per example ``[B]`` (Song et al. 2019, Eq. 7; SSM-VR Eq. 8).

    With projections ``v_1..v_M`` drawn as ``PROJECTIONS[noise](key, (M, *x.shape))``:
    SSM is ``mean_m [v_m^T grad_x s v_m + 1/2 (v_m^T s)^2]``, SSM-VR
    ``mean_m [v_m^T grad_x s v_m] + 1/2 ||s||^2``; both are unbiased for Hyvärinen's objective.
    """
    s, vjv, v = _hutchinson_terms(score_at, x, key, num_projections, noise)
    if variance_reduction:
        return jnp.mean(vjv, axis=0) + 0.5 * _flat_dot(s, s, 1)
    m, b = v.shape[:2]
    vs = jnp.einsum("mbk,bk->mb", v.reshape(m, b, -1), s.reshape(b, -1))
    return jnp.mean(vjv + 0.5 * jnp.square(vs), axis=0)


def _ism(score_at, x, key, *, exact_trace, num_projections, noise):
    return implicit_score_matching(
        score_at, x, key, exact_trace=exact_trace, num_probes=num_projections, noise=noise
    )


def _ssm(score_at, x, key, *, exact_trace, num_projections, noise):
    del exact_trace
    return sliced_score_matching(score_at, x, key, num_projections=num_projections, noise=noise)


def _ssm_vr(score_at, x, key, *, exact_trace, num_projections, noise):
    del exact_trace
    return sliced_score_matching(
        score_at, x, key, num_projections=num_projections, noise=noise, variance_reduction=True
    )


OBJECTIVES: dict[str, Callable] = {"ism": _ism, "ssm": _ssm, "ssm_vr": _ssm_vr}
"""Objective name -> ``objective(score_at, x, key, *, exact_trace, num_projections, noise)``."""


def _check_importance_sampling(importance_sampling: bool, likelihood_weighting: bool) -> None:
    """Importance sampling of ``t`` is defined only with the likelihood weighting."""
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
    """Noise-conditional implicit or sliced score matching, a drop-in for the DSM loss.

    The objective is applied to the model's score ``s(., t)`` at ``x_t = alpha_t x + sigma_t z``;
    since ``x_t ~ p_t`` the minimizer is ``grad log p_t`` (for Gaussian ``z`` ISM at ``t`` equals
    the DSM term minus a constant, so both have the same expected gradient). The weight
    ``lambda(t) = sigma_t^2`` (default) is DSM's: ``||grad log p_t||`` grows like ``1 / sigma_t``,
    so without it the smallest noise levels would dominate the loss and its gradient variance.
    Per example: ``lambda(t) * objective``, times ``2 / D`` when ``reduce_mean`` (the scale of the
    DSM loss, so learning rates carry over). ``fixed_t`` gives every example one time (score
    matching of the data smoothed by one noise level). Random draws (stable)::

        k_t, k_z, k_v = jax.random.split(key, 3)
        t = jax.random.uniform(k_t, (B,), minval=eps, maxval=sde.T)   # continuous
        # importance_sampling: t, w = importance_sample_t(sde, k_t, (B,), eps)
        # fixed_t: t = full((B,), fixed_t); k_t unused
        # discrete (continuous=False): i = jax.random.randint(k_t, (B,), 0, sde.N), the labels of
        #   smld_loss (VE, sigma = flip(discrete_sigmas)[i]) or ddpm_loss (VP)
        z = jax.random.normal(k_z, batch.shape)
        # projections/probes of the objective drawn from k_v

    Returns ``(loss, per_example_losses)``; values can be negative (ISM's minimum is
    ``-1/2 E||grad log p_t||^2``).
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
    b = batch.shape[0]
    k_t, k_z, k_v = jax.random.split(key, 3)
    z = jax.random.normal(k_z, batch.shape)
    w = None
    if continuous:
        if fixed_t is not None:
            if not 0 < fixed_t <= sde.T:
                raise ValueError(f"need 0 < fixed_t <= T = {sde.T}, got fixed_t={fixed_t}")
            t = jnp.full((b,), fixed_t, jnp.float32)
        else:
            t, w = _draw_times(sde, k_t, b, eps, importance_sampling)
        mean, std = sde.marginal_prob(batch, t)
        x_t = mean + batch_mul(std, z)
        score_fn = get_score_fn(sde, model_fn, continuous=True)
        score_at = lambda y: score_fn(y, t)
        if likelihood_weighting:
            weight = jnp.square(sde.drift_diffusion(jnp.zeros_like(batch), t)[1])
        else:
            weight = jnp.square(std)
    else:
        labels = jax.random.randint(k_t, (b,), 0, sde.N)
        scale, std = sde.discrete_marginal(labels)
        x_t = batch_mul(scale, batch) + batch_mul(std, z)

        def score_at(y):
            return sde.score_from_output(model_fn(y, labels), None, labels, continuous=False)

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
