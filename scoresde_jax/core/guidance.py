"""Classifier guidance: the score of ``p_t(x | y)`` from an unconditional score and a classifier
of perturbed data (paper, Section 5, Eq. 14).

``grad_x log p_t(x | y) = grad_x log p_t(x) + grad_x log p_t(y | x)`` (Bayes' rule; ``p_t(y)``
does not depend on ``x``), so any sampler that takes a ``score_fn(x, t)`` samples
class-conditionally when given :func:`classifier_guided_score_fn`. Training the classifier and
the command-line entries live in :mod:`scoresde_jax.modes.classifier`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import ScoreFn

__all__ = ["LogProbFn", "classifier_guided_score_fn"]

# ``log_prob_fn(x [B, ...], t [B]) -> [B, num_classes]`` log-probabilities ``log p_t(y | x)``.
LogProbFn = Callable[[jax.Array, jax.Array], jax.Array]


def classifier_guided_score_fn(
    score_fn: ScoreFn, log_prob_fn: LogProbFn, labels, scale: float = 1.0
) -> ScoreFn:
    """The score of the class-conditional marginals, ``score(x, t) + scale grad_x log p_t(y|x)``.

    Paper, Section 5 (Eq. 14 with ``p_t(y | x(t))`` a classifier of perturbed data): with
    ``scale = 1`` and exact ingredients the result is ``grad_x log p_t(x | y)``.

    Args:
      score_fn: the unconditional ``score_fn(x, t)``.
      log_prob_fn: ``log_prob_fn(x, t) -> [B, num_classes]`` log-probabilities (normalized over
        the classes, e.g. a ``log_softmax`` of logits).
      labels: the requested class of every example, an integer or an int array ``[B]``.
      scale: multiplies the classifier's gradient.

    Returns:
      ``score_fn(x, t)`` of the same signature. The gradient of each example's own selected
      log-probability is taken through the sum over the batch, which equals the per-example
      gradient because the classifier treats examples independently.
    """

    def guided(x: jax.Array, t: jax.Array) -> jax.Array:
        y = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), (x.shape[0],))

        def selected(x_):
            logp = log_prob_fn(x_, t)
            return jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=1))

        return score_fn(x, t) + scale * jax.grad(selected)(x)

    return guided
