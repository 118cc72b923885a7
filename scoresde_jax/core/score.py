"""Network output -> score, for every SDE and for continuous or discrete noise conditioning.

A *model function* is ``model_fn(x, labels) -> output`` (a network applied with fixed parameters).
What a network outputs and what it is conditioned on depend on the SDE, as in the paper's code:

==========  ===========  =====================================  ===========================
SDE         time         label fed to the network               score
==========  ===========  =====================================  ===========================
VP, sub-VP  continuous   ``999 t``                              ``-output / sigma_t``
VP          discrete     ``(N - 1) t`` (DDPM step index)        ``-output / sqrt(1 - abar_i)``
sub-VP      discrete     ``999 t`` (sub-VP has no discrete form) ``-output / sigma_t``
VE          continuous   ``sigma_t`` (the noise level)          ``output``
VE          discrete     ``round((T - t)(N - 1))`` (NCSN index) ``output``
==========  ===========  =====================================  ===========================

VP-type networks predict the noise ``eps`` (DDPM's parametrisation), so the score is
``-eps / sigma``; VE networks output the score directly (NCSN++ divides by sigma itself when
``scale_by_sigma`` is set).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import SDE, VESDE, VPSDE, ScoreFn, SubVPSDE, batch_mul

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]

__all__ = ["ModelFn", "get_score_fn", "time_labels"]


def time_labels(sde: SDE, t: jax.Array, *, continuous: bool) -> jax.Array:
    """The conditioning label the network sees at time ``t`` (see the module table)."""
    if isinstance(sde, VESDE):
        if continuous:
            return sde.marginal_coeffs(t)[1]
        return jnp.round((sde.T - t) / sde.T * (sde.N - 1)).astype(jnp.int32)
    if isinstance(sde, (VPSDE, SubVPSDE)):
        if continuous or isinstance(sde, SubVPSDE):
            return t * 999
        return t / sde.T * (sde.N - 1)
    raise TypeError(f"Unsupported SDE {type(sde).__name__}")


def get_score_fn(sde: SDE, model_fn: ModelFn, *, continuous: bool) -> ScoreFn:
    """Wraps a model function into ``score_fn(x, t)`` following the module table.

    Args:
      sde: the forward SDE the model was trained for.
      model_fn: ``model_fn(x, labels) -> output``.
      continuous: whether the model was trained in continuous time (``training.continuous``).
    """
    if isinstance(sde, VESDE):

        def score_fn(x, t):
            return model_fn(x, time_labels(sde, t, continuous=continuous))

        return score_fn

    if isinstance(sde, (VPSDE, SubVPSDE)):

        def score_fn(x, t):
            labels = time_labels(sde, t, continuous=continuous)
            out = model_fn(x, labels)
            if continuous or isinstance(sde, SubVPSDE):
                std = sde.marginal_coeffs(t)[1]
            else:
                std = sde.sqrt_1m_alphas_cumprod[labels.astype(jnp.int32)]
            return batch_mul(-1.0 / std, out)

        return score_fn

    raise TypeError(f"Unsupported SDE {type(sde).__name__}")
