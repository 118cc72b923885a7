"""Fréchet distance between small-classifier features of samples and a dataset (FD-MNIST, ...).

``classifier_fd(sample_batches, "mnist") -> {"fd_mnist": ..., ...}``: not FIDs; they compare only
with numbers from the same weight file and the same number of samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from scoresde_jax.metrics.feature_net import (
    CLASSIFIERS,
    Classifier,
    feature_fn,
    load_classifier,
    resolve_file,
)
from scoresde_jax.metrics.fid import (
    FeatureStats,
    Stats,
    frechet_distance,
    load_stats,
    load_stats_meta,
    save_stats,
)


def _as_classifier(classifier: str | os.PathLike | Classifier) -> Classifier:
    return classifier if isinstance(classifier, Classifier) else load_classifier(classifier)


def reference_stats(
    classifier: str | os.PathLike | Classifier,
    images: np.ndarray | Iterable[np.ndarray],
    *,
    mesh: Mesh | None = None,
    batch_size: int = 500,
) -> FeatureStats:
    """Feature statistics of ``images`` (one ``[n, H, W, C]`` array or an iterable of batches)."""
    clf = _as_classifier(classifier)
    fn = feature_fn(clf, mesh, batch_size=batch_size)
    stats = FeatureStats(clf.spec.feature_dim)
    for batch in [images] if isinstance(images, np.ndarray | jax.Array) else images:
        if len(batch):
            stats.update(fn(batch))
    return stats


def load_reference_stats(name_or_path: str | os.PathLike) -> tuple[Stats, dict[str, Any]]:
    """Reference statistics and their metadata: the shipped test-split statistics of a named
    classifier (``"mnist"``, ``"cifar10_small"``) or a statistics ``.npz`` file."""
    path = resolve_file(name_or_path, "statistics")
    if not path.exists():
        raise FileNotFoundError(f"reference statistics {path} not found")
    return load_stats(path), load_stats_meta(path)


def classifier_fd(
    images: Iterable[np.ndarray] | np.ndarray,
    reference: str | os.PathLike | Stats | FeatureStats,
    *,
    classifier: str | os.PathLike | Classifier | None = None,
    mesh: Mesh | None = None,
    batch_size: int = 500,
) -> dict[str, float | int]:
    """``{"fd_<name>": distance, "fd_<name>_num_samples": n}`` between the classifier features of
    ``images`` (uint8 batches or one array) and ``reference``: a shipped classifier's name (its
    test-split statistics), a statistics ``.npz`` or ``Stats`` / ``FeatureStats``. ``classifier``
    defaults to the one the reference names; statistics of other weights are refused."""
    meta: dict[str, Any] = {}
    if isinstance(reference, FeatureStats):
        ref = reference.to_stats()
    elif isinstance(reference, Stats):
        ref = reference
    else:
        ref, meta = load_reference_stats(reference)
        if classifier is None:
            if os.fspath(reference) in CLASSIFIERS:
                classifier = os.fspath(reference)
            elif "classifier" in meta:
                classifier = meta["classifier"]
    if classifier is None:
        raise ValueError(
            "classifier_fd: give classifier= (the reference statistics do not name one)"
        )
    clf = _as_classifier(classifier)
    recorded = meta.get("classifier_sha256")
    if recorded is not None and recorded != clf.fingerprint:
        raise ValueError(
            f"the reference statistics were computed with other weights than classifier "
            f"{clf.name!r} (sha256 {recorded[:12]}... vs {clf.fingerprint[:12]}...); recompute "
            "them with `python -m scoresde_jax.feature_classifier stats`"
        )
    if ref.mu.shape != (clf.spec.feature_dim,):
        raise ValueError(
            f"reference statistics have d={ref.mu.shape[0]}, classifier {clf.name!r} "
            f"d={clf.spec.feature_dim}"
        )
    gen = reference_stats(clf, images, mesh=mesh, batch_size=batch_size)
    if gen.count < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 images, got {gen.count}")
    fd = frechet_distance(gen.mean, gen.cov, ref.mu, ref.sigma)
    return {f"fd_{clf.name}": fd, f"fd_{clf.name}_num_samples": gen.count}


def save_classifier_stats(path, classifier: Classifier, images, **meta) -> FeatureStats:
    """:func:`reference_stats` of ``images`` written to ``path`` with the classifier's name and
    fingerprint (what :func:`classifier_fd` checks)."""
    stats = reference_stats(classifier, images)
    ids = dict(classifier=classifier.name, classifier_sha256=classifier.fingerprint)
    save_stats(path, stats.mean, stats.cov, **ids, num_examples=stats.count, **meta)
    return stats
