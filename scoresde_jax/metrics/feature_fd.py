"""Fréchet distance between small-classifier features of samples and a dataset (FD-MNIST, ...).

Typical use::

    name = classifier_for_dataset("MNIST", 28, 1)          # "mnist"
    metrics = classifier_fd(sample_batches, name)           # {"fd_mnist": ..., ...}

The numbers are called ``fd_<name>`` and compare only with numbers from the same weight file and
the same number of samples: they are not FIDs.
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
)

__all__ = ["classifier_fd", "load_reference_stats", "reference_stats"]


def _as_classifier(classifier: str | os.PathLike | Classifier) -> Classifier:
    return classifier if isinstance(classifier, Classifier) else load_classifier(classifier)


def _batches(images: np.ndarray | Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    # One array [n, H, W, C] is one batch; anything else is an iterable of batches.
    if isinstance(images, np.ndarray | jax.Array):
        return [images]
    return images


def reference_stats(
    classifier: str | os.PathLike | Classifier,
    images: np.ndarray | Iterable[np.ndarray],
    *,
    mesh: Mesh | None = None,
    batch_size: int = 500,
) -> FeatureStats:
    """Feature statistics of ``images`` (one ``[n, H, W, C]`` array or an iterable of batches).

    Save them with ``scoresde_jax.metrics.fid.save_stats(path, s.mean, s.cov,
    classifier=name, classifier_sha256=classifier.fingerprint, ...)`` (what the ``stats``
    command does) so that :func:`classifier_fd` can check that they belong to the classifier.
    """
    clf = _as_classifier(classifier)
    fn = feature_fn(clf, mesh, batch_size=batch_size)
    stats = FeatureStats(clf.spec.feature_dim)
    for batch in _batches(images):
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
    """Fréchet distance between the classifier features of ``images`` and reference statistics.

    Args:
      images: generated images, ``uint8 [n, H, W, C]`` batches (an iterable, streamed into
        running statistics so that they never sit in memory at once) or one array.
      reference: a shipped classifier name (``"mnist"``, ``"cifar10_small"``: its test-split
        statistics and, unless ``classifier`` is given, its weights), a statistics ``.npz``
        written by the ``stats`` command (its metadata names the classifier), or in-memory
        :class:`~scoresde_jax.metrics.fid.Stats` / ``FeatureStats`` (then ``classifier`` is
        required).
      classifier: the classifier (object, name or weight file); by default the one the
        reference names.
      mesh: optional ``("data",)`` mesh to split batches over.
      batch_size: images per compiled call.

    Returns:
      ``{"fd_<name>": distance, "fd_<name>_num_samples": n}`` with ``<name>`` the classifier's.

    Raises:
      ValueError: fewer than two images, no way to tell the classifier, or reference statistics
        computed with different classifier weights.
    """
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
