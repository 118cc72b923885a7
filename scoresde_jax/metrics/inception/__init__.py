"""The FID Inception-v3: the network (:mod:`.network`) and its weights (:mod:`.weights`)."""

from scoresde_jax.metrics.inception import network, weights
from scoresde_jax.metrics.inception.network import *  # noqa: F403
from scoresde_jax.metrics.inception.weights import *  # noqa: F403

__all__ = [*network.__all__, *weights.__all__]
