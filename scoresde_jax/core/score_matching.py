"""Score matching without a denoising target: implicit and sliced score matching.

Denoising score matching (:mod:`scoresde_jax.core.losses`) regresses the model on the score of the
Gaussian perturbation kernel. The objectives here instead only need the model ``s`` and its
Jacobian ``grad_x s``, and are minimized by the score of whatever distribution the points ``x``
come from:

* Implicit score matching (Hyvärinen 2005, "Estimation of non-normalized statistical models by
  score matching", Theorem 1): ``J(s) = E[tr(grad_x s(x)) + 1/2 ||s(x)||^2``, equal to
  ``1/2 E||s(x) - grad log p(x)||^2`` up to a constant (integration by parts). The trace is exact
  (one Jacobian-vector product per input dimension) or Hutchinson's estimate
  ``E_v[v^T grad_x s v]`` for ``E[v v^T] = I``.
* Sliced score matching (Song et al. 2019, "Sliced score matching: a scalable approach to density
  and score estimation", Eq. 7 and Eq. 8): ``E_v[v^T grad_x s v + 1/2 (v^T s)^2]`` with random
  projections ``v`` (Gaussian or Rademacher, ``E[v v^T] = I``), and the variance-reduced SSM-VR
  ``E_v[v^T grad_x s v] + 1/2 ||s||^2``, which integrates the second term out analytically. Both
  have the expectation of ``J``; SSM-VR is Hutchinson-trace ISM.

Each needs one forward-mode product ``grad_x s v`` per projection (``jax.linearize`` once, then a
``vmap`` over the projections), whatever the data dimension; exact-trace ISM needs ``D`` of them.

The functions :func:`implicit_score_matching` and :func:`sliced_score_matching` act on any
``score_at(x) -> score`` that treats the examples of a batch independently (no batch statistics),
and return the per-example objective ``[B]`` in the "half-sum" convention above. For training they
are wrapped by :func:`score_matching_loss`, which has the ``loss_fn(model_fn, batch, key)`` shape of
the DSM losses: it perturbs the data with the SDE's kernel at a random time ``t`` and applies the
objective to ``s(., t)``, so the minimizer is the score of the perturbed marginal ``p_t`` at every
``t`` — the same target as DSM, reached without knowing the kernel's score.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.core.score import ModelFn, get_score_fn
from scoresde_jax.core.sde import SDE, VESDE, VPSDE, SubVPSDE, batch_mul, importance_sample_t

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


def _rademacher(key: jax.Array, shape) -> jax.Array:
    return jax.random.rademacher(key, shape, jnp.float32)


def _gaussian(key: jax.Array, shape) -> jax.Array:
    return jax.random.normal(key, shape)


PROJECTIONS: dict[str, Callable] = {"rademacher": _rademacher, "gaussian": _gaussian}
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


def _draw_projections(key: jax.Array, num: int, shape, noise: str) -> jax.Array:
    if noise not in PROJECTIONS:
        raise ValueError(
            f"Unknown projection noise {noise!r}; choose one of {sorted(PROJECTIONS)}."
        )
    if num < 1:
        raise ValueError(f"need at least one projection, got num_projections={num}")
    return PROJECTIONS[noise](key, (num, *shape))


def _score_and_jvps(score_at: ScoreAt, x: jax.Array, tangents: jax.Array):
    """``s(x)`` and ``grad_x s(x) v`` for each ``v`` in ``tangents: [M, B, ...]``.

    ``jax.linearize`` evaluates the network once; the ``M`` products share its residuals.
    """
    s, jvp_fn = jax.linearize(score_at, x)
    return s, jax.vmap(jvp_fn)(tangents)


def _hutchinson_terms(score_at, x, key, num, noise):
    """``(s, v_m^T grad s v_m [M, B], v [M, B, ...])`` for ``num`` projections ``v_m``."""
    v = _draw_projections(key, num, x.shape, noise)
    s, jv = _score_and_jvps(score_at, x, v)
    vjv = _flat_dot(v, jv, 2)  # [M, B]
    return s, vjv, v


def implicit_score_matching(
    score_at: ScoreAt,
    x: jax.Array,
    key: jax.Array | None = None,
    *,
    exact_trace: bool = True,
    num_probes: int = 1,
    noise: str = "rademacher",
) -> jax.Array:
    """Hyvärinen's objective per example: ``tr(grad_x s(x)) + 1/2 ||s(x)||^2``.

    Minimized in expectation over ``x ~ p`` by ``s = grad log p`` (Hyvärinen 2005, Theorem 1):
    ``E[tr(grad s) + 1/2 ||s||^2] = 1/2 E||s - grad log p||^2 - 1/2 E||grad log p||^2``.

    Args:
      score_at: ``score_at(x) -> score``, shapes ``[B, ...]``, acting on each example separately.
      x: points ``[B, ...]`` drawn from the distribution whose score is sought.
      key: PRNG key for the Hutchinson probes (unused with ``exact_trace``).
      exact_trace: the exact trace from ``D`` forward-mode products (basis vectors); otherwise
        Hutchinson's estimate from ``num_probes`` random probes (then the objective is SSM-VR).
      num_probes: Hutchinson probes per example.
      noise: probe law, ``"rademacher"`` or ``"gaussian"``.

    Returns:
      ``[B]`` per-example values.

    Raises:
      ValueError: for an exact trace above :data:`EXACT_TRACE_MAX_DIM` dimensions, a missing key
        for Hutchinson's estimate, or an unknown ``noise``.
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
    """Sliced score matching per example (Song et al. 2019, Eq. 7; SSM-VR Eq. 8).

    With projections ``v_1..v_M`` drawn independently for every example:

    * SSM:    ``mean_m [v_m^T grad_x s v_m + 1/2 (v_m^T s)^2]``;
    * SSM-VR: ``mean_m [v_m^T grad_x s v_m] + 1/2 ||s||^2``.

    Since ``E[v v^T] = I`` for both laws, both are unbiased for Hyvärinen's objective, so the
    minimizer is ``grad log p``.

    Args:
      score_at: ``score_at(x) -> score``, shapes ``[B, ...]``, acting on each example separately.
      x: points ``[B, ...]``.
      key: PRNG key of the projections, drawn as ``PROJECTIONS[noise](key, (M, *x.shape))``.
      num_projections: ``M``, projections per example (one forward-mode product each).
      noise: ``"rademacher"`` or ``"gaussian"``.
      variance_reduction: SSM-VR instead of SSM.

    Returns:
      ``[B]`` per-example values.
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

    Each example is perturbed with the SDE's kernel, ``x_t = alpha_t x + sigma_t z``, and the
    objective is applied to the model's score ``s(., t)`` at ``x_t``. Since ``x_t ~ p_t``, the
    minimizer is ``grad log p_t`` for every ``t``: the target of DSM, reached here without the
    kernel's score. (For Gaussian ``z`` and a fixed ``s``, ISM at ``t`` equals the DSM term minus
    ``1/2 E||grad log p_0t||^2 - 1/2 E||grad log p_t||^2``, which does not depend on ``s``, so the
    two losses have the same expected gradient.)

    The weight ``lambda(t) = sigma_t^2`` (default) is DSM's: the objective at ``t`` is
    ``1/2 E||s - grad log p_t||^2`` plus a constant, and ``||grad log p_t||`` grows like
    ``1 / sigma_t`` as the noise shrinks, so without the weight the smallest noise levels would
    dominate the loss and its gradient variance; with it every level contributes ``O(D)``.
    ``likelihood_weighting`` uses ``g(t)^2`` instead, as for DSM.

    Per example: ``lambda(t) * objective`` (half-sum convention), times ``2 / D`` when
    ``reduce_mean`` — exactly the scale of the DSM loss with the same ``reduce_mean``, so learning
    rates carry over.

    Random draws (the protocol is stable, so a loss can be reproduced from its key)::

        k_t, k_z, k_v = jax.random.split(key, 3)
        t = jax.random.uniform(k_t, (B,), minval=eps, maxval=sde.T)   # continuous
        # importance_sampling: t, w = importance_sample_t(sde, k_t, (B,), eps)
        # fixed_t: t = full((B,), fixed_t); k_t unused
        # discrete (continuous=False): i = jax.random.randint(k_t, (B,), 0, sde.N), the labels of
        #   smld_loss (VE, sigma = flip(discrete_sigmas)[i]) or ddpm_loss (VP)
        z = jax.random.normal(k_z, batch.shape)
        # projections/probes of the objective drawn from k_v

    Args:
      sde: the forward SDE.
      model_fn: ``model_fn(x, labels) -> output``; continuous time: converted to a score by
        :func:`scoresde_jax.core.score.get_score_fn`; discrete: NCSN (VE, outputs the score) or DDPM
        (VP, predicts the noise) labels as in ``smld_loss`` / ``ddpm_loss``.
      batch: data ``[B, ...]``.
      key: PRNG key.
      objective: ``"ism"``, ``"ssm"`` or ``"ssm_vr"`` (see :data:`OBJECTIVES`).
      continuous: continuous-time conditioning (``training.continuous``); ``False`` draws the
        discrete noise levels of SMLD (VE) or DDPM (VP).
      likelihood_weighting: ``lambda(t) = g(t)^2`` (continuous only).
      importance_sampling: draw ``t ∝ g^2 / sigma^2`` (needs ``likelihood_weighting``).
      reduce_mean: scale by ``2 / D`` (mean convention of DSM) instead of the half sum.
      eps: smallest time drawn.
      fixed_t: if set, every example uses this one time (plain score matching of the data smoothed
        by one small noise level, e.g. ``fixed_t = eps``); continuous only.
      exact_trace: ISM only: exact trace (low dimension) or Hutchinson.
      num_projections: projections of SSM / SSM-VR, probes of Hutchinson ISM.
      noise: ``"rademacher"`` or ``"gaussian"`` projections.

    Returns:
      ``(loss, per_example_losses)``. The values can be negative: ISM's minimum is
      ``-1/2 E||grad log p_t||^2``.

    Raises:
      ValueError: for an unknown objective or an option combination without meaning.
    """
    if objective not in OBJECTIVES:
        raise ValueError(
            f"Unknown score-matching objective {objective!r}; choose one of {sorted(OBJECTIVES)}."
        )
    if importance_sampling and not likelihood_weighting:
        raise ValueError(
            "importance_sampling draws t in proportion to the likelihood weighting g^2/sigma^2 and "
            "is only defined together with likelihood_weighting=True."
        )
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
        elif importance_sampling:
            t, w = importance_sample_t(sde, k_t, (b,), eps)
        else:
            t = jax.random.uniform(k_t, (b,), minval=eps, maxval=sde.T)
        mean, std = sde.marginal_prob(batch, t)
        x_t = mean + batch_mul(std, z)
        score_fn = get_score_fn(sde, model_fn, continuous=True)
        score_at = lambda y: score_fn(y, t)
        if likelihood_weighting:
            weight = jnp.square(sde.drift_diffusion(jnp.zeros_like(batch), t)[1])
        else:
            weight = jnp.square(std)
    elif isinstance(sde, SubVPSDE):
        raise ValueError(
            "The sub-VP SDE has no discrete (SMLD/DDPM) noise levels; set training.continuous=True."
        )
    elif isinstance(sde, VESDE):
        labels = jax.random.randint(k_t, (b,), 0, sde.N)
        sigmas = jnp.flip(sde.discrete_sigmas)[labels]
        x_t = batch + batch_mul(sigmas, z)
        score_at = lambda y: model_fn(y, labels)
        weight = jnp.square(sigmas)
    elif isinstance(sde, VPSDE):
        labels = jax.random.randint(k_t, (b,), 0, sde.N)
        std = sde.sqrt_1m_alphas_cumprod[labels]
        x_t = batch_mul(sde.sqrt_alphas_cumprod[labels], batch) + batch_mul(std, z)
        score_at = lambda y: batch_mul(-1.0 / std, model_fn(y, labels))
        weight = jnp.square(std)
    else:
        raise TypeError(f"Unsupported SDE {type(sde).__name__}")

    per_example = OBJECTIVES[objective](
        score_at,
        x_t,
        k_v,
        exact_trace=exact_trace,
        num_projections=num_projections,
        noise=noise,
    )
    losses = weight * per_example
    if reduce_mean:
        losses = losses * (2.0 / math.prod(batch.shape[1:]))
    if w is not None:
        losses = w * losses
    return jnp.mean(losses), losses
