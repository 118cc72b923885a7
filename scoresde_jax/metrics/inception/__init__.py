"""The FID Inception-v3: the network (:mod:`.network`) and its weights (:mod:`.weights`)."""

from scoresde_jax.metrics.inception.network import (
    INCEPTION_NUM_CLASSES,
    INCEPTION_SIZE,
    FIDInceptionV3,
    make_inception_fn,
    preprocess_images,
    resize_bilinear,
)
from scoresde_jax.metrics.inception.weights import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_NAME,
    INCEPTION_WEIGHTS_SHA256,
    INCEPTION_WEIGHTS_URL,
    find_inception_weights,
    load_inception_params,
    variables_from_state_dict,
)

__all__ = [
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
