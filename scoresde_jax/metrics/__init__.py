"""Sample-quality metrics: FID / IS / KID with the FID Inception-v3 network, in JAX.

:mod:`.inception`: the network, its compiled feature function and weights; :mod:`.fid`: the
metrics, streaming and reference statistics (float64 NumPy); :mod:`.quality`: images -> metrics.
"""

from scoresde_jax.metrics import inception
from scoresde_jax.metrics.fid import (
    PUBLISHED_NUM_SAMPLES,
    FeatureStats,
    ISAccumulator,
    Stats,
    compute_metrics,
    fid_sample_warning,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_stats,
    load_stats_meta,
    save_stats,
)
from scoresde_jax.metrics.inception import *  # noqa: F403 - the list of metrics.inception

__all__ = [
    "PUBLISHED_NUM_SAMPLES",
    "FeatureStats",
    "ISAccumulator",
    "Stats",
    "compute_metrics",
    "fid_sample_warning",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_stats",
    "load_stats_meta",
    "save_stats",
    *inception.__all__,
]
