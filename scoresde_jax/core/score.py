"""Network output -> score, for every SDE and for continuous or discrete noise conditioning.

A *model function* is ``model_fn(x, labels) -> output`` (a network with fixed parameters); what
it sees and outputs follows the paper's code (each SDE's ``time_labels``, ``score_from_output``):

==========  ===========  =====================================  ===========================
SDE         time         label fed to the network               score
==========  ===========  =====================================  ===========================
VP, sub-VP  continuous   ``999 t``                              ``-output / sigma_t``
VP          discrete     ``(N - 1) t`` (DDPM step index)        ``-output / sqrt(1 - abar_i)``
sub-VP      discrete     ``999 t`` (sub-VP has no discrete form) ``-output / sigma_t``
VE          continuous   ``sigma_t`` (the noise level)          ``output``
VE          discrete     ``round((T - t)(N - 1))`` (NCSN index) ``output``
==========  ===========  =====================================  ===========================

VP-type networks predict the noise (DDPM's parametrisation); VE networks output the score
(NCSN++ divides by sigma itself when ``scale_by_sigma`` is set).
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from scoresde_jax.core.sde import SDE, ScoreFn, check_sde

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def time_labels(sde: SDE, t: jax.Array, *, continuous: bool) -> jax.Array:
    """The conditioning label the network sees at time ``t`` (see the module table)."""
    check_sde(sde, "time_labels")
    return sde.time_labels(t, continuous=continuous)


def get_score_fn(sde: SDE, model_fn: ModelFn, *, continuous: bool) -> ScoreFn:
    """``score_fn(x, t)`` of a network ``model_fn(x, labels)`` trained on ``sde``, in continuous
    time or not (``training.continuous``)."""
    check_sde(sde, "get_score_fn")

    def score_fn(x, t):
        labels = sde.time_labels(t, continuous=continuous)
        return sde.score_from_output(model_fn(x, labels), t, labels, continuous=continuous)

    return score_fn
