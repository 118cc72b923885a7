"""Denoising score-matching losses: continuous (Eq. 7 of the paper), SMLD and DDPM.

A loss is ``loss_fn(model_fn, batch, key) -> (loss, per_example_losses [B])``, ``model_fn(x,
labels)`` bound to parameters. ``reduce_mean`` reduces an example's squared error by the mean
(scale independent of the data size) or half the sum (the original code's and SMLD's convention:
the likelihood-weighted loss then bounds the NLL up to a constant).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.core.score import ModelFn, get_score_fn
from scoresde_jax.core.score_matching import (
    OBJECTIVES,
    PROJECTIONS,
    _check_importance_sampling,
    _draw_times,
    score_matching_loss,
)
from scoresde_jax.core.sde import SDE, VESDE, VPSDE, batch_mul

LossFn = Callable[[ModelFn, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

# Names of the training objectives get_loss_fn accepts (config.training.loss).
LOSSES = ("dsm", *OBJECTIVES)


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
    """Continuous-time denoising score matching (paper, Eq. 7) at ``x_t = alpha_t x + sigma_t z``:
    ``||sigma_t s + z||^2``, or with ``likelihood_weighting`` ``g^2 ||s + z / sigma_t||^2`` (with
    half-sum reduction an NLL bound; Song et al. 2021, "Maximum likelihood training of
    score-based diffusion models"). Draws: ``k_t, k_z = split(key)`` for ``t`` and ``z``.
    """

    _check_importance_sampling(importance_sampling, likelihood_weighting)
    k_t, k_z = jax.random.split(key)
    t, w = _draw_times(sde, k_t, batch.shape[0], eps, importance_sampling)
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


def _labels_and_noise(sde, name: str, loss: str, batch: jax.Array, key: jax.Array):
    """Checks the SDE; draws ``k_i, k_z = split(key)``, ``i = randint(k_i, (B,), 0, N)`` and
    ``z = normal(k_z, batch.shape)``."""
    if getattr(sde, "name", None) != name:
        raise TypeError(f"{loss} needs the {name} SDE, got {type(sde).__name__}")
    k_i, k_z = jax.random.split(key)
    labels = jax.random.randint(k_i, (batch.shape[0],), 0, sde.N)
    return labels, jax.random.normal(k_z, batch.shape)


def smld_loss(
    sde: VESDE, model_fn: ModelFn, batch: jax.Array, key: jax.Array, *, reduce_mean: bool = False
) -> tuple[jax.Array, jax.Array]:
    """The discrete SMLD / NCSN loss (Song & Ermon 2019; paper, Eq. 1): per example
    ``sigma_i^2 reduce(||model_fn(x + sigma_i z, i) + z / sigma_i||^2)``, label ``i`` indexing
    ``flip(sde.discrete_sigmas)`` (label 0 is ``sigma_max``, as in NCSN)."""
    labels, z = _labels_and_noise(sde, "vesde", "smld_loss", batch, key)
    sigmas = jnp.flip(sde.discrete_sigmas)[labels]
    noise = batch_mul(sigmas, z)
    score = model_fn(batch + noise, labels)
    target = -batch_mul(1.0 / jnp.square(sigmas), noise)
    losses = _reduce(jnp.square(score - target), reduce_mean) * jnp.square(sigmas)
    return jnp.mean(losses), losses


def ddpm_loss(
    sde: VPSDE, model_fn: ModelFn, batch: jax.Array, key: jax.Array, *, reduce_mean: bool = True
) -> tuple[jax.Array, jax.Array]:
    """The DDPM noise-prediction loss (Ho et al. 2020, ``L_simple``): per example
    ``reduce(||model_fn(x_i, i) - z||^2)``, ``x_i = sqrt(abar_i) x + sqrt(1 - abar_i) z``."""
    labels, noise = _labels_and_noise(sde, "vpsde", "ddpm_loss", batch, key)
    x_i = batch_mul(sde.sqrt_alphas_cumprod[labels], batch) + batch_mul(
        sde.sqrt_1m_alphas_cumprod[labels], noise
    )
    losses = _reduce(jnp.square(model_fn(x_i, labels) - noise), reduce_mean)
    return jnp.mean(losses), losses


# SDE name -> its discrete-time loss (SDEs without a discrete chain train only continuously).
DISCRETE_LOSSES = {"vesde": smld_loss, "vpsde": ddpm_loss}


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
    """The training loss ``loss_fn(model_fn, batch, key)``, its options checked here: ``"dsm"``
    is :func:`sde_loss`, or in discrete time :func:`smld_loss` (VE) / :func:`ddpm_loss` (VP);
    ``"ism"``, ``"ssm"``, ``"ssm_vr"`` are :func:`.score_matching.score_matching_loss`."""
    _check_importance_sampling(importance_sampling, likelihood_weighting)
    if loss not in LOSSES:
        raise ValueError(f"Unknown training.loss={loss!r}; use one of {list(LOSSES)}.")
    if loss != "dsm":
        if ssm_noise not in PROJECTIONS:
            raise ValueError(
                f"Unknown training.ssm_noise={ssm_noise!r}; use 'rademacher' or 'gaussian'."
            )
        if ssm_num_projections < 1:
            raise ValueError(
                f"training.ssm_num_projections must be >= 1, got {ssm_num_projections}."
            )
    if not continuous:
        if likelihood_weighting:
            raise ValueError(
                "likelihood_weighting is only defined for the continuous loss; set "
                "training.continuous=True or likelihood_weighting=False."
            )
        if getattr(sde, "name", None) not in DISCRETE_LOSSES:
            raise ValueError(
                f"The {getattr(sde, 'title', type(sde).__name__)} has no discrete (SMLD/DDPM) "
                "counterpart, so it can only be trained with the continuous loss; set "
                "training.continuous=True."
            )
    if not continuous and loss == "dsm":
        return functools.partial(DISCRETE_LOSSES[sde.name], sde, reduce_mean=reduce_mean)
    options = dict(
        continuous=continuous,
        likelihood_weighting=likelihood_weighting,
        importance_sampling=importance_sampling,
        reduce_mean=reduce_mean,
        eps=eps,
    )
    if loss == "dsm":
        return functools.partial(sde_loss, sde, **options)
    return functools.partial(
        score_matching_loss,
        sde,
        objective=loss,
        exact_trace=ism_exact_trace,
        num_projections=ssm_num_projections,
        noise=ssm_noise,
        **options,
    )
