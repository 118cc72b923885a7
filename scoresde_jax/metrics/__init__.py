"""Sample-quality metrics: FID / IS / KID with the FID Inception-v3 network, in JAX.

:mod:`.inception`: the network, its compiled feature function and weights; :mod:`.fid`: the
metrics, streaming and reference statistics (float64 NumPy); :mod:`.quality`: images -> metrics.
"""

from scoresde_jax.metrics import fid, inception
from scoresde_jax.metrics.fid import *  # noqa: F403
from scoresde_jax.metrics.inception import *  # noqa: F403

__all__ = [*fid.__all__, *inception.__all__]
