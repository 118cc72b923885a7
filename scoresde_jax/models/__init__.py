"""Score networks (Flax Linen) called as ``model.apply(params, x [B, ...], labels, train=False)``
(NHWC images; labels of :func:`scoresde_jax.core.score.time_labels`; ``train=True`` needs a
``"dropout"`` rng). :data:`MODELS` maps ``config.model.name`` to the module holding the network's
PyTorch weight mapping; :func:`scoresde_jax.run.experiment.model_from_config` builds one.
"""

from __future__ import annotations

from scoresde_jax.models.classifier import (
    CLASSIFIERS,
    NoiseConditionalCNN,
    NoiseConditionalWideResNet,
    get_classifier,
)
from scoresde_jax.models.ddpm import DDPM
from scoresde_jax.models.mlp import MLPScore
from scoresde_jax.models.ncsnpp import NCSNpp
from scoresde_jax.models.ncsnv2 import NCSN, NCSNv2

__all__ = [
    "CLASSIFIERS",
    "DDPM",
    "MODELS",
    "MLPScore",
    "NCSN",
    "NCSNpp",
    "NCSNv2",
    "NoiseConditionalCNN",
    "NoiseConditionalWideResNet",
    "get_classifier",
]

MODELS: dict[str, str] = {
    "mlp": "scoresde_jax.models.mlp",
    "ncsnpp": "scoresde_jax.models.ncsnpp",
    "ddpm": "scoresde_jax.models.ddpm",
    "ncsn": "scoresde_jax.models.ncsnv2",
    "ncsnv2_64": "scoresde_jax.models.ncsnv2",
    "ncsnv2_128": "scoresde_jax.models.ncsnv2",
    "ncsnv2_256": "scoresde_jax.models.ncsnv2",
}
