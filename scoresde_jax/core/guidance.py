"""Classifier guidance (paper, Section 5, Eq. 14): by Bayes' rule
``grad_x log p_t(x | y) = grad_x log p_t(x) + grad_x log p_t(y | x)``, so any sampler given
:func:`classifier_guided_score_fn` samples class-conditionally. Training the classifier lives in
:mod:`scoresde_jax.modes.classifier`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import ScoreFn

# ``log_prob_fn(x [B, ...], t [B]) -> [B, num_classes]`` log-probabilities ``log p_t(y | x)``.
LogProbFn = Callable[[jax.Array, jax.Array], jax.Array]


def classifier_guided_score_fn(
    score_fn: ScoreFn, log_prob_fn: LogProbFn, labels, scale: float = 1.0
) -> ScoreFn:
    """``score(x, t) + scale grad_x log p_t(y | x)``: ``grad_x log p_t(x | y)`` at ``scale = 1``.

    ``log_prob_fn`` gives normalized log-probabilities (e.g. a ``log_softmax``); ``labels`` is an
    int or ``[B]``. The gradient of the batch sum is each example's own, as the classifier treats
    examples independently.
    """

    def guided(x: jax.Array, t: jax.Array) -> jax.Array:
        y = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (x.shape[0],))

        def selected(x_):
            logp = log_prob_fn(x_, t)
            return jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=1))

        return score_fn(x, t) + scale * jax.grad(selected)(x)

    return guided
