"""FID / IS / KID of generated images, streamed from an iterator of uint8 ``[n, H, W, C]``
batches through Inception into running statistics (up to ``keep_features`` raw rows for KID)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from scoresde_jax.core.mesh import map_fixed_batches
from scoresde_jax.metrics.fid import (
    FeatureStats,
    ISAccumulator,
    Stats,
    compute_metrics,
    load_stats,
    save_stats,
)
from scoresde_jax.metrics.inception import load_inception_params, make_inception_fn


def _rgb(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 [n, H, W, C] images, got {images.dtype} {images.shape}")
    if images.shape[-1] == 1:  # grayscale: the Inception network sees three equal channels
        images = np.repeat(images, 3, axis=-1)
    if images.shape[-1] != 3:
        raise ValueError(f"Inception features need 1 or 3 channels, got {images.shape[-1]}")
    return images


class InceptionFeatures:
    """pool_3 features and logits of the FID Inception network (weights: the
    ``pt_inception-2015-12-05-6726825d.pth`` file or an ``.npz`` of it), ``batch_size`` images
    per compiled call (the last batch padded), split over the optional ``("data",)`` mesh."""

    def __init__(self, weights_path: str, *, mesh=None, batch_size: int = 200):
        self.variables = load_inception_params(weights_path)
        self._fn = make_inception_fn(self.variables, mesh)
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 [n, H, W, C]`` -> ``(pool_3 [n, 2048], logits [n, 1008])`` as numpy."""
        return map_fixed_batches(self._fn, _rgb(images), self.batch_size)


def inception_statistics(
    batches: Iterable[np.ndarray],
    features: InceptionFeatures,
    *,
    keep_features: int | None = 10_000,
) -> tuple[FeatureStats, ISAccumulator]:
    """Streams uint8 image batches through Inception into pool_3 statistics and IS logits."""
    stats = FeatureStats(keep_features=keep_features)
    logits = ISAccumulator()
    for images in batches:
        if len(images) == 0:
            continue
        pool, lg = features(images)
        stats.update(pool)
        logits.update(lg)
    return stats, logits


def save_reference_stats(path: str, stats: FeatureStats, **meta) -> str:
    """Writes reference statistics (mu, sigma and the kept features for KID) as ``.npz``."""
    s = stats.to_stats()
    save_stats(path, s.mu, s.sigma, s.features, num_examples=stats.count, **meta)
    return path


def inception_metrics(
    batches: Iterable[np.ndarray],
    features: InceptionFeatures,
    reference: str | Stats | None,
    *,
    keep_features: int | None = 10_000,
) -> dict:
    """FID and KID against ``reference`` (a stats file or :class:`Stats`; without one only the IS)
    and the Inception Score, with :func:`compute_metrics`'s ``"warnings"``."""
    gen, logits = inception_statistics(batches, features, keep_features=keep_features)
    ref = load_stats(reference) if isinstance(reference, str) else reference
    out = compute_metrics(
        gen if ref is not None else None,
        ref,
        logits=logits,
        num_samples=gen.count,
        # The standard 10 splits, fewer for (test-sized) sets of under 10 samples.
        is_splits=max(1, min(10, gen.count)),
    )
    if ref is None:
        out["warnings"].append(
            "No reference statistics (eval.fid_stats_path): FID and KID were not computed. "
            "Make them with --mode stats."
        )
    return out
