"""Denoising score-matching losses: continuous (Eq. 7 of the paper), SMLD and DDPM.

All losses are pure functions of a *model function* ``model_fn(x, labels) -> output`` that the
caller has already bound to parameters (and to a dropout key, if any), so that

    jax.grad(lambda p: loss_fn(make_model_fn(p), batch, key)[0])(params)

differentiates the loss with respect to the parameters. Every loss returns
``(loss, per_example_losses)``: the scalar is the batch mean of the ``[B]`` vector, which is kept
for logging and for per-example diagnostics.

``reduce_mean`` picks how the squared error of one example is reduced over its non-batch
dimensions: the mean (``True``) or half the sum (``False``, the convention of the original code and
of the SMLD papers). Half the sum makes the likelihood-weighted loss an upper bound on the negative
log-likelihood (up to a constant); the mean keeps the loss scale independent of the data size.

Implicit and sliced score matching (:mod:`scoresde_jax.core.score_matching`) train the same models
with the same loss signature; :func:`get_loss_fn` picks them with ``loss="ism" | "ssm" | "ssm_vr"``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.core.score import ModelFn, get_score_fn
from scoresde_jax.core.score_matching import (
    OBJECTIVES,
    implicit_score_matching,
    score_matching_loss,
    sliced_score_matching,
)
from scoresde_jax.core.sde import SDE, VESDE, VPSDE, SubVPSDE, batch_mul, importance_sample_t

LossFn = Callable[[ModelFn, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

LOSSES = ("dsm", *OBJECTIVES)
"""Names of the training objectives ``get_loss_fn`` accepts (``config.training.loss``)."""

__all__ = [
    "LOSSES",
    "LossFn",
    "ddpm_loss",
    "get_loss_fn",
    "implicit_score_matching",
    "score_matching_loss",
    "sde_loss",
    "sliced_score_matching",
    "smld_loss",
]


def _reduce(sq_err: jax.Array, reduce_mean: bool) -> jax.Array:
    """Reduces ``[B, ...]`` squared errors to ``[B]``: mean, or half the sum."""
    flat = sq_err.reshape(sq_err.shape[0], -1)
    return jnp.mean(flat, axis=-1) if reduce_mean else 0.5 * jnp.sum(flat, axis=-1)


def sde_loss(
    sde: SDE,
    model_fn: ModelFn,
    batch: jax.Array,
    key: jax.Array,
    *,
    continuous: bool = True,
    likelihood_weighting: bool = False,
    importance_sampling: bool = False,
    reduce_mean: bool = True,
    eps: float = 1e-5,
) -> tuple[jax.Array, jax.Array]:
    """Continuous-time denoising score matching (paper, Eq. 7).

    For each example ``x`` the loss draws a time ``t``, perturbs ``x`` with the SDE's Gaussian
    kernel to ``x_t = alpha_t x + sigma_t z`` and compares the model's score ``s`` with the
    kernel's score ``-z / sigma_t``:

    * ``lambda(t) = sigma_t^2`` (default): ``||sigma_t s + z||^2``, every noise level on one scale;
    * ``lambda(t) = g(t)^2`` (``likelihood_weighting``): ``g(t)^2 ||s + z / sigma_t||^2``, whose
      ``t``-integral with half-sum reduction bounds the negative log-likelihood (Song et al. 2021,
      "Maximum likelihood training of score-based diffusion models").

    Random draws (the protocol is stable, so a loss can be reproduced from its key)::

        k_t, k_z = jax.random.split(key)
        t = jax.random.uniform(k_t, (B,), minval=eps, maxval=sde.T)
        # with importance_sampling instead: t, w = importance_sample_t(sde, k_t, (B,), eps)
        z = jax.random.normal(k_z, batch.shape)

    Args:
      sde: the forward SDE.
      model_fn: ``model_fn(x, labels) -> output``, converted to a score by
        :func:`scoresde_jax.core.score.get_score_fn`.
      batch: data ``[B, ...]``.
      key: a PRNG key for ``t`` and ``z``.
      continuous: whether the network is conditioned on continuous time (passed to
        ``get_score_fn``); with ``False`` the network sees discrete labels but the loss is still
        the continuous one.
      likelihood_weighting: weight by ``g(t)^2`` instead of ``sigma_t^2``.
      importance_sampling: draw ``t`` from ``q(t) ∝ g(t)^2 / sigma_t^2`` and multiply each example's
        loss by ``w = Uniform(t) / q(t)``; the expectation is unchanged and, for VP and sub-VP, the
        variance is much smaller. Only meaningful (and only allowed) with likelihood weighting.
      reduce_mean: mean over non-batch dims if ``True``, half the sum otherwise.
      eps: smallest time drawn, which keeps ``sigma_t`` away from zero.

    Returns:
      ``(loss, per_example_losses)``: a scalar and a ``[B]`` vector whose mean is ``loss``.

    Raises:
      ValueError: if ``importance_sampling`` is set without ``likelihood_weighting``.
    """
    if importance_sampling and not likelihood_weighting:
        raise ValueError(
            "importance_sampling draws t in proportion to the likelihood weighting g^2/sigma^2 and "
            "is only defined together with likelihood_weighting=True."
        )
    b = batch.shape[0]
    k_t, k_z = jax.random.split(key)
    if importance_sampling:
        t, w = importance_sample_t(sde, k_t, (b,), eps)
    else:
        t = jax.random.uniform(k_t, (b,), minval=eps, maxval=sde.T)
        w = None
    z = jax.random.normal(k_z, batch.shape)
    mean, std = sde.marginal_prob(batch, t)
    x_t = mean + batch_mul(std, z)
    score = get_score_fn(sde, model_fn, continuous=continuous)(x_t, t)

    if likelihood_weighting:
        g2 = jnp.square(sde.drift_diffusion(jnp.zeros_like(batch), t)[1])
        losses = g2 * _reduce(jnp.square(score + batch_mul(1.0 / std, z)), reduce_mean)
    else:
        losses = _reduce(jnp.square(batch_mul(std, score) + z), reduce_mean)
    if w is not None:
        losses = w * losses
    return jnp.mean(losses), losses


def smld_loss(
    sde: VESDE,
    model_fn: ModelFn,
    batch: jax.Array,
    key: jax.Array,
    *,
    reduce_mean: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The discrete SMLD / NCSN loss (Song & Ermon 2019; paper, Eq. 1).

    The network is conditioned on an integer label ``i`` that indexes the noise levels in
    *descending* order, ``sigmas = flip(sde.discrete_sigmas)`` (label 0 is ``sigma_max``), as NCSN
    does and as :func:`scoresde_jax.core.score.time_labels` assumes for a discrete VE model. Each
    example contributes ``sigma_i^2 reduce(||model_fn(x + sigma_i z, i) + z / sigma_i||^2)``.

    Random draws::

        k_i, k_z = jax.random.split(key)
        i = jax.random.randint(k_i, (B,), 0, sde.N)
        z = jax.random.normal(k_z, batch.shape)

    Args:
      sde: a :class:`~scoresde_jax.core.sde.VESDE`, which supplies the noise levels.
      model_fn: ``model_fn(x, labels) -> score`` with integer labels ``[B]``.
      batch: data ``[B, ...]``.
      key: a PRNG key.
      reduce_mean: mean over non-batch dims if ``True``, half the sum (NCSN's choice) otherwise.

    Returns:
      ``(loss, per_example_losses)``.
    """
    if not isinstance(sde, VESDE):
        raise TypeError(f"smld_loss needs a VESDE, got {type(sde).__name__}")
    b = batch.shape[0]
    k_i, k_z = jax.random.split(key)
    labels = jax.random.randint(k_i, (b,), 0, sde.N)
    sigmas = jnp.flip(sde.discrete_sigmas)[labels]
    noise = batch_mul(sigmas, jax.random.normal(k_z, batch.shape))
    score = model_fn(batch + noise, labels)
    target = -batch_mul(1.0 / jnp.square(sigmas), noise)
    losses = _reduce(jnp.square(score - target), reduce_mean) * jnp.square(sigmas)
    return jnp.mean(losses), losses


def ddpm_loss(
    sde: VPSDE,
    model_fn: ModelFn,
    batch: jax.Array,
    key: jax.Array,
    *,
    reduce_mean: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """The DDPM noise-prediction loss (Ho et al. 2020, ``L_simple``).

    ``x_i = sqrt(abar_i) x + sqrt(1 - abar_i) z`` with ``abar = sde.alphas_cumprod``; each example
    contributes ``reduce(||model_fn(x_i, i) - z||^2)``.

    Random draws::

        k_i, k_z = jax.random.split(key)
        i = jax.random.randint(k_i, (B,), 0, sde.N)
        z = jax.random.normal(k_z, batch.shape)

    Args:
      sde: a :class:`~scoresde_jax.core.sde.VPSDE`, which supplies the beta schedule.
      model_fn: ``model_fn(x, labels) -> predicted noise`` with integer labels ``[B]``.
      batch: data ``[B, ...]``.
      key: a PRNG key.
      reduce_mean: mean over non-batch dims if ``True``, half the sum otherwise.

    Returns:
      ``(loss, per_example_losses)``.
    """
    if not isinstance(sde, VPSDE):
        raise TypeError(f"ddpm_loss needs a VPSDE, got {type(sde).__name__}")
    b = batch.shape[0]
    k_i, k_z = jax.random.split(key)
    labels = jax.random.randint(k_i, (b,), 0, sde.N)
    noise = jax.random.normal(k_z, batch.shape)
    x_i = batch_mul(sde.sqrt_alphas_cumprod[labels], batch) + batch_mul(
        sde.sqrt_1m_alphas_cumprod[labels], noise
    )
    losses = _reduce(jnp.square(model_fn(x_i, labels) - noise), reduce_mean)
    return jnp.mean(losses), losses


def get_loss_fn(
    sde: SDE,
    *,
    continuous: bool,
    likelihood_weighting: bool = False,
    importance_sampling: bool = False,
    reduce_mean: bool = True,
    eps: float = 1e-5,
    loss: str = "dsm",
    ism_exact_trace: bool = True,
    ssm_num_projections: int = 1,
    ssm_noise: str = "rademacher",
) -> LossFn:
    """Picks the training loss for an SDE, as ``loss_fn(model_fn, batch, key)``.

    With ``loss="dsm"`` (the default) the denoising losses below; with ``"ism"``, ``"ssm"`` or
    ``"ssm_vr"`` :func:`scoresde_jax.core.score_matching.score_matching_loss` with the same time
    sampling, weighting and reduction (discrete time draws the SMLD / DDPM noise levels).

    ============  ===========  ==================================
    SDE           continuous   discrete
    ============  ===========  ==================================
    VE            sde_loss     smld_loss
    VP            sde_loss     ddpm_loss
    sub-VP        sde_loss     (error: sub-VP has no discrete form)
    ============  ===========  ==================================

    Args:
      sde: the forward SDE.
      continuous: train with continuous time (``config.training.continuous``).
      likelihood_weighting: ``lambda(t) = g(t)^2`` (continuous only).
      importance_sampling: importance-sample ``t`` (needs ``likelihood_weighting``).
      reduce_mean: mean over non-batch dims if ``True``, half the sum otherwise.
      eps: smallest time of the continuous loss.
      loss: ``"dsm"``, ``"ism"``, ``"ssm"`` or ``"ssm_vr"`` (:data:`LOSSES`).
      ism_exact_trace: ISM: exact Jacobian trace (data of at most
        :data:`~scoresde_jax.core.score_matching.EXACT_TRACE_MAX_DIM` dimensions) or Hutchinson's.
      ssm_num_projections: projections per example of SSM / SSM-VR (probes of Hutchinson ISM).
      ssm_noise: projection law, ``"rademacher"`` or ``"gaussian"``.

    Returns:
      ``loss_fn(model_fn, batch, key) -> (loss, per_example_losses)``.

    Raises:
      ValueError: for combinations that have no meaning.
    """
    if importance_sampling and not likelihood_weighting:
        raise ValueError(
            "importance_sampling=True needs likelihood_weighting=True: the time distribution it "
            "draws from is proportional to the likelihood weighting."
        )
    if loss not in LOSSES:
        raise ValueError(f"Unknown training.loss={loss!r}; use one of {list(LOSSES)}.")
    if loss != "dsm":
        return _score_matching_loss_fn(
            sde,
            objective=loss,
            continuous=continuous,
            likelihood_weighting=likelihood_weighting,
            importance_sampling=importance_sampling,
            reduce_mean=reduce_mean,
            eps=eps,
            exact_trace=ism_exact_trace,
            num_projections=ssm_num_projections,
            noise=ssm_noise,
        )
    if continuous:

        def loss_fn(model_fn, batch, key):
            return sde_loss(
                sde,
                model_fn,
                batch,
                key,
                continuous=True,
                likelihood_weighting=likelihood_weighting,
                importance_sampling=importance_sampling,
                reduce_mean=reduce_mean,
                eps=eps,
            )

        return loss_fn

    if likelihood_weighting:
        raise ValueError(
            "likelihood_weighting is only defined for the continuous loss; set "
            "training.continuous=True or likelihood_weighting=False."
        )
    if isinstance(sde, SubVPSDE):
        raise ValueError(
            "The sub-VP SDE has no discrete (SMLD/DDPM) counterpart, so it can only be trained "
            "with the continuous loss; set training.continuous=True."
        )
    if isinstance(sde, VESDE):
        return lambda model_fn, batch, key: smld_loss(
            sde, model_fn, batch, key, reduce_mean=reduce_mean
        )
    if isinstance(sde, VPSDE):
        return lambda model_fn, batch, key: ddpm_loss(
            sde, model_fn, batch, key, reduce_mean=reduce_mean
        )
    raise TypeError(f"Unsupported SDE {type(sde).__name__}")


def _score_matching_loss_fn(sde: SDE, *, objective: str, continuous: bool, **options) -> LossFn:
    """Validates the options once, at construction, and binds them into a ``LossFn``."""
    if options["noise"] not in ("rademacher", "gaussian"):
        raise ValueError(
            f"Unknown training.ssm_noise={options['noise']!r}; use 'rademacher' or 'gaussian'."
        )
    if options["num_projections"] < 1:
        raise ValueError(
            f"training.ssm_num_projections must be >= 1, got {options['num_projections']}."
        )
    if not continuous:
        if options["likelihood_weighting"]:
            raise ValueError(
                "likelihood_weighting is only defined for the continuous loss; set "
                "training.continuous=True or likelihood_weighting=False."
            )
        if isinstance(sde, SubVPSDE):
            raise ValueError(
                "The sub-VP SDE has no discrete (SMLD/DDPM) counterpart, so it can only be trained "
                "with the continuous loss; set training.continuous=True."
            )

    def loss_fn(model_fn, batch, key):
        return score_matching_loss(
            sde, model_fn, batch, key, objective=objective, continuous=continuous, **options
        )

    return loss_fn
