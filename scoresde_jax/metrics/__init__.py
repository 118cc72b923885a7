"""Sample-quality metrics: FID / IS / KID with the FID Inception-v3 network, in JAX.

* :mod:`scoresde_jax.metrics.inception`: the network (:class:`FIDInceptionV3`), the compiled
  feature function and the weight loader;
* :mod:`scoresde_jax.metrics.fid`: Frechet distance, Inception Score, KID, streaming statistics
  and reference-statistics files (float64 NumPy);
* :mod:`scoresde_jax.metrics.quality`: generated image batches -> metrics.
"""

from scoresde_jax.metrics.fid import (
    FeatureStats,
    ISAccumulator,
    Stats,
    compute_metrics,
    fid_sample_warning,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_stats,
    save_stats,
)
from scoresde_jax.metrics.inception import (
    INCEPTION_NUM_CLASSES,
    INCEPTION_SIZE,
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_NAME,
    INCEPTION_WEIGHTS_SHA256,
    INCEPTION_WEIGHTS_URL,
    FIDInceptionV3,
    find_inception_weights,
    load_inception_params,
    make_inception_fn,
    preprocess_images,
    resize_bilinear,
    variables_from_state_dict,
)

__all__ = [
    "FeatureStats",
    "ISAccumulator",
    "Stats",
    "compute_metrics",
    "fid_sample_warning",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_stats",
    "save_stats",
    "INCEPTION_NUM_CLASSES",
    "INCEPTION_SIZE",
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_NAME",
    "INCEPTION_WEIGHTS_SHA256",
    "INCEPTION_WEIGHTS_URL",
    "FIDInceptionV3",
    "find_inception_weights",
    "load_inception_params",
    "make_inception_fn",
    "preprocess_images",
    "resize_bilinear",
    "variables_from_state_dict",
]
