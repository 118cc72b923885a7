"""Small image classifiers whose penultimate features give a Fréchet distance (FD-MNIST, ...).

FID needs the Inception-v3 weights (about 100 MB, downloaded once). Where they are not at hand,
and for datasets Inception was never meant for (28x28 grayscale digits), sample quality can still
be tracked with the Fréchet distance between the feature statistics of generated and real images
under a *small classifier trained on the dataset itself*:

- ``"mnist"``: 28x28x1 digits, three convolution stages (32, 64, 128 channels) and a 128-d
  feature layer, trained on the 60,000 MNIST training images;
- ``"cifar10_small"``: 32x32x3 images, five convolutions (32, 32, 64, 64, 128 channels) and a
  128-d feature layer, trained with random flips and crops on the 8,068-image local CIFAR-10
  subset (``cifar10_partial_exact.npz``); a weak classifier, so a coarse metric.

The weights and the statistics of each test split ship in ``weights/`` next to this file (how
they were made: ``weights/README.md``). The numbers are called ``fd_<name>`` (``fd_mnist``,
``fd_cifar10_small``) and are comparable only with numbers from the same weight file and the
same number of samples: they are not FIDs and not comparable with any published metric.

Typical use::

    name = classifier_for_dataset("MNIST", 28, 1)          # "mnist"
    metrics = classifier_fd(sample_batches, name)           # {"fd_mnist": ..., ...}

Retrain and rewrite the shipped files with the command line::

    python -m scoresde_jax.metrics.classifier train --dataset mnist --data_path DIR \\
        --out scoresde_jax/metrics/weights/mnist_classifier.npz \\
        --stats_out scoresde_jax/metrics/weights/mnist_test_stats.npz

The network is a plain Flax Linen module (convolutions, ReLU, max pooling, no normalization
layers), so evaluation needs no batch statistics and a feature depends on its own image only:
padding a batch changes nothing, and streaming equals one-shot evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh

from scoresde_jax.core.mesh import batch_sharding, map_fixed_batches, put_global_batch, replicated
from scoresde_jax.data import open_image_source
from scoresde_jax.io.files import atomic_savez
from scoresde_jax.metrics.fid import (
    FeatureStats,
    Stats,
    frechet_distance,
    load_stats,
    load_stats_meta,
    save_stats,
)

__all__ = [
    "CLASSIFIERS",
    "WEIGHTS_DIR",
    "Classifier",
    "ClassifierSpec",
    "FeatureCNN",
    "classifier_fd",
    "classifier_for_dataset",
    "evaluate_accuracy",
    "feature_fn",
    "load_classifier",
    "load_reference_stats",
    "params_fingerprint",
    "reference_stats",
    "save_classifier",
    "train_classifier",
]

log = logging.getLogger(__name__)

# The shipped weight and statistics files live beside this module (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# Version of the weight-file layout (the ``meta`` JSON records it).
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """Architecture and data of one classifier.

    Attributes:
      dataset: dataset name as the configs spell it (``"MNIST"``, ``"CIFAR10"``).
      image_size: input height and width.
      num_channels: input channels.
      stages: convolution channels per stage; every 3x3 convolution is followed by a ReLU and
        every stage by a 2x2 max pool.
      feature_dim: width of the penultimate (feature) layer.
      num_classes: number of logits.
      augment: train with random horizontal flips and 4-pixel-padded random crops.
    """

    dataset: str
    image_size: int
    num_channels: int
    stages: tuple[tuple[int, ...], ...]
    feature_dim: int = 128
    num_classes: int = 10
    augment: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.num_channels)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stages"] = [list(s) for s in self.stages]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ClassifierSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        kwargs["stages"] = tuple(tuple(int(c) for c in s) for s in kwargs["stages"])
        return cls(**kwargs)


# The shipped classifiers: name -> (architecture, weight file, reference statistics file).
CLASSIFIERS: dict[str, ClassifierSpec] = {
    "mnist": ClassifierSpec(
        dataset="MNIST", image_size=28, num_channels=1, stages=((32,), (64,), (128,))
    ),
    "cifar10_small": ClassifierSpec(
        dataset="CIFAR10",
        image_size=32,
        num_channels=3,
        stages=((32, 32), (64, 64), (128,)),
        augment=True,
    ),
}


def _weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}_classifier.npz"


def _stats_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}_test_stats.npz"


class FeatureCNN(nn.Module):
    """Convolution stages, a ReLU feature layer and a linear classifier.

    ``__call__`` maps NHWC images (``uint8`` in ``[0, 255]`` or float in ``[0, 1]``) to
    ``(features [B, feature_dim], logits [B, num_classes])``; ask for one of them and XLA drops
    the other.
    """

    stages: Sequence[Sequence[int]]
    feature_dim: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = _unit_float(images) * 2.0 - 1.0
        for i, stage in enumerate(self.stages):
            for j, channels in enumerate(stage):
                x = nn.relu(nn.Conv(channels, (3, 3), name=f"conv{i}_{j}")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        features = nn.relu(nn.Dense(self.feature_dim, name="features")(x))
        logits = nn.Dense(self.num_classes, name="logits")(features)
        return features, logits


def _unit_float(images: jax.Array) -> jax.Array:
    """``uint8 [0, 255]`` -> float32 ``[0, 1]``; float input is taken to be in ``[0, 1]``."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def _module(spec: ClassifierSpec) -> FeatureCNN:
    return FeatureCNN(
        stages=spec.stages, feature_dim=spec.feature_dim, num_classes=spec.num_classes
    )


# --------------------------------------------------------------------------------------------------
# A trained classifier: value, files
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
    """A trained classifier: its name, architecture, parameters and metadata.

    ``features(images)`` and ``logits(images)`` evaluate it eagerly (small inputs, tests);
    :func:`feature_fn` gives the compiled, batched version for large image sets.
    """

    name: str
    spec: ClassifierSpec
    params: Any
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def module(self) -> FeatureCNN:
        return _module(self.spec)

    def apply(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(features [B, feature_dim], logits [B, num_classes])`` of NHWC images."""
        return self.module.apply({"params": self.params}, jnp.asarray(images))

    def features(self, images: jax.Array) -> jax.Array:
        """Penultimate-layer features ``[B, feature_dim]``."""
        return self.apply(images)[0]

    def logits(self, images: jax.Array) -> jax.Array:
        """Class logits ``[B, num_classes]``."""
        return self.apply(images)[1]

    @property
    def fingerprint(self) -> str:
        """:func:`params_fingerprint` of the parameters."""
        return params_fingerprint(self.params)


def params_fingerprint(params: Any) -> str:
    """SHA-256 of a parameter tree (names, dtypes, shapes and bytes), independent of the file.

    Reference statistics record the fingerprint of the classifier they were computed with, so
    that statistics and weights from different training runs are never compared.
    """
    h = hashlib.sha256()
    for key, value in sorted(traverse_util.flatten_dict(params, sep="/").items()):
        a = np.ascontiguousarray(np.asarray(value))
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_classifier(path: str | os.PathLike, classifier: Classifier) -> None:
    """Writes ``classifier`` as a flat ``.npz``: one float32 array per parameter (keys like
    ``params/conv0_0/kernel``, from ``flax.traverse_util.flatten_dict(..., sep="/")``) and
    ``meta``, a JSON string with the name, the architecture and the training record."""
    flat = traverse_util.flatten_dict({"params": classifier.params}, sep="/")
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in flat.items()}
    meta = {
        **classifier.meta,
        "format_version": _FORMAT_VERSION,
        "name": classifier.name,
        "spec": classifier.spec.to_json(),
        "input_shape": list(classifier.spec.input_shape),
        "feature_dim": classifier.spec.feature_dim,
        "num_params": int(sum(a.size for a in arrays.values())),
        "params_sha256": params_fingerprint(classifier.params),
    }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    atomic_savez(path, **arrays)


def _resolve(name_or_path: str | os.PathLike, kind: str) -> Path:
    """A shipped file by classifier name, or ``name_or_path`` itself when it is a path."""
    text = os.fspath(name_or_path)
    if text in CLASSIFIERS:
        return _weights_path(text) if kind == "weights" else _stats_path(text)
    looks_like_path = os.sep in text or text.endswith(".npz") or Path(text).exists()
    if not looks_like_path:
        raise ValueError(
            f"unknown classifier {text!r}; use one of {sorted(CLASSIFIERS)} or the path of an "
            f".npz {kind} file"
        )
    return Path(text).expanduser()


def load_classifier(name_or_path: str | os.PathLike) -> Classifier:
    """Loads a shipped classifier by name (``"mnist"``, ``"cifar10_small"``) or a weight file.

    Raises:
      ValueError: an unknown name, or a file that is not a classifier written by
        :func:`save_classifier`.
      FileNotFoundError: the file does not exist (for a shipped name: the package was installed
        without its data files).
    """
    path = _resolve(name_or_path, "weights")
    if not path.exists():
        raise FileNotFoundError(
            f"classifier weights {path} not found"
            + (
                "; the package data (scoresde_jax/metrics/weights/*.npz) is missing from this "
                "installation"
                if os.fspath(name_or_path) in CLASSIFIERS
                else ""
            )
        )
    with np.load(path, allow_pickle=False) as data:
        if "meta" not in data.files:
            raise ValueError(f"{path}: not a classifier weight file (no 'meta' entry)")
        meta = json.loads(str(data["meta"]))
        flat = {k: data[k] for k in data.files if k != "meta"}
    if meta.get("format_version") != _FORMAT_VERSION or "spec" not in meta:
        raise ValueError(
            f"{path}: unsupported classifier file (format {meta.get('format_version')})"
        )
    tree = traverse_util.unflatten_dict(flat, sep="/")
    if set(tree) != {"params"}:
        raise ValueError(f"{path}: expected 'params/...' keys, got {sorted(tree)}")
    return Classifier(
        name=meta["name"],
        spec=ClassifierSpec.from_json(meta["spec"]),
        params=jax.tree.map(jnp.asarray, tree["params"]),
        meta=meta,
    )


def classifier_for_dataset(dataset_name: str, image_size: int, num_channels: int) -> str | None:
    """The shipped classifier for a dataset at a resolution, or ``None`` if none applies.

    ``("MNIST", 28, 1) -> "mnist"``, ``("CIFAR10", 32, 3) -> "cifar10_small"`` (dataset names
    case-insensitive); any other combination -> ``None``.
    """
    for name, spec in CLASSIFIERS.items():
        if (
            str(dataset_name).lower() == spec.dataset.lower()
            and image_size == spec.image_size
            and num_channels == spec.num_channels
        ):
            return name
    return None


# --------------------------------------------------------------------------------------------------
# Compiled, batched evaluation
# --------------------------------------------------------------------------------------------------


def feature_fn(
    classifier: Classifier,
    mesh: Mesh | None = None,
    *,
    batch_size: int = 500,
    with_logits: bool = False,
) -> Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """A compiled ``images [n, H, W, C] -> features [n, feature_dim]`` (numpy float32) for any n.

    Images go through the network ``batch_size`` at a time; the last chunk is padded with zero
    images to the full size, so the network compiles once per input dtype whatever ``n`` is (the
    padding rows are dropped again).

    Args:
      classifier: from :func:`load_classifier` or :func:`train_classifier`.
      mesh: optional mesh with a ``data`` axis (:func:`scoresde_jax.core.mesh.make_data_mesh`):
        each chunk is split over it and the parameters are replicated. ``batch_size`` is rounded
        up to a multiple of the axis size. Every process passes the same, global images.
      batch_size: images per compiled call.
      with_logits: return ``(features, logits)`` instead of the features alone.

    Returns:
      The function; its input is ``uint8`` in ``[0, 255]`` or float in ``[0, 1]``, NHWC, of the
      classifier's input shape.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    module = classifier.module
    expected = classifier.spec.input_shape

    def apply(params, images):
        return module.apply({"params": params}, images)

    if mesh is None:
        params = jax.device_put(classifier.params)
        jitted = jax.jit(apply)
        put = jnp.asarray
    else:
        shards = mesh.shape["data"]
        batch_size = -(-batch_size // shards) * shards
        params = jax.device_put(classifier.params, replicated(mesh))
        # Replicated outputs (small: feature_dim floats per image) can be read on every host.
        jitted = jax.jit(
            apply,
            in_shardings=(replicated(mesh), batch_sharding(mesh)),
            out_shardings=(replicated(mesh), replicated(mesh)),
        )
        put = functools.partial(put_global_batch, mesh=mesh)

    def run(images):
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"classifier {classifier.name!r} takes images [n, {', '.join(map(str, expected))}]"
                f", got shape {images.shape}"
            )
        if images.shape[0] == 0:
            features = np.zeros((0, classifier.spec.feature_dim), np.float32)
            logits = np.zeros((0, classifier.spec.num_classes), np.float32)
            return (features, logits) if with_logits else features
        outputs = map_fixed_batches(lambda chunk: jitted(params, put(chunk)), images, batch_size)
        return outputs if with_logits else outputs[0]

    return run


def evaluate_accuracy(
    classifier: Classifier,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 500,
    mesh: Mesh | None = None,
) -> float:
    """Top-1 accuracy (a fraction in ``[0, 1]``) of ``classifier`` on ``images``/``labels``."""
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be [{len(images)}], got shape {labels.shape}")
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    _, logits = feature_fn(classifier, mesh, batch_size=batch_size, with_logits=True)(images)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


# --------------------------------------------------------------------------------------------------
# Fréchet distance in the feature space
# --------------------------------------------------------------------------------------------------


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
    path = _resolve(name_or_path, "statistics")
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
            "them with `python -m scoresde_jax.metrics.classifier stats`"
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


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _augment(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
    """Random horizontal flips and random ``H x W`` crops of the zero-padded batch."""
    b, h, w, _ = x.shape
    flip_key, crop_key = jax.random.split(key)
    flip = jax.random.bernoulli(flip_key, 0.5, (b,))
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * pad + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def _spec_for(spec: str | ClassifierSpec | None, image_shape: tuple[int, ...]) -> tuple[str, Any]:
    if isinstance(spec, ClassifierSpec):
        return "custom", spec
    if spec is None:
        for name, s in CLASSIFIERS.items():
            if s.input_shape == tuple(image_shape):
                return name, s
        raise ValueError(
            f"no classifier architecture for images of shape {image_shape}; pass spec="
        )
    if spec not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {spec!r}; use one of {sorted(CLASSIFIERS)}")
    return spec, CLASSIFIERS[spec]


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_steps: int,
    batch_size: int = 128,
    seed: int = 0,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-4,
    warmup_steps: int | None = None,
    spec: str | ClassifierSpec | None = None,
    name: str | None = None,
    augment: bool | None = None,
    log_every: int = 100,
) -> tuple[Classifier, np.ndarray]:
    """Trains a classifier with AdamW and a warmup-cosine learning-rate schedule.

    The training set is put on the device once; each step takes its batch from a per-epoch
    permutation and its augmentation from ``fold_in(key, step)``, so the run is a pure function
    of ``seed``. The step is compiled once with the state donated.

    Args:
      images: ``uint8 [n, H, W, C]`` (or float in ``[0, 1]``) training images.
      labels: integer labels ``[n]`` in ``[0, num_classes)``.
      num_steps: optimization steps.
      batch_size: examples per step (capped at ``n``).
      seed: seed of the initialization, the batch order and the augmentation.
      learning_rate: peak learning rate.
      weight_decay: decoupled weight decay of AdamW.
      warmup_steps: linear warmup; default ``min(100, num_steps // 10)``.
      spec: architecture: a :data:`CLASSIFIERS` name or a :class:`ClassifierSpec`; by default
        the shipped architecture for the image shape.
      name: the classifier's name (default the architecture's name).
      augment: random flips and crops; default the architecture's choice.
      log_every: log the mean loss of every this many steps (``<= 0``: never).

    Returns:
      ``(classifier, losses)``: the trained classifier (metadata: steps, batch size, learning
      rate, number of training examples, ...) and the training loss of every step ``[num_steps]``.
    """
    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int32)
    if images.ndim != 4:
        raise ValueError(f"images must be [n, H, W, C], got shape {images.shape}")
    n = images.shape[0]
    if n < 1:
        raise ValueError("no training images")
    if labels.shape != (n,):
        raise ValueError(f"labels must be [{n}], got shape {labels.shape}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    arch_name, arch = _spec_for(spec, images.shape[1:])
    if arch.input_shape != images.shape[1:]:
        raise ValueError(f"architecture takes {arch.input_shape} images, got {images.shape[1:]}")
    if labels.min() < 0 or labels.max() >= arch.num_classes:
        raise ValueError(f"labels must lie in [0, {arch.num_classes}), got {labels.min()}..")
    augment = arch.augment if augment is None else augment
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size
    warmup = min(100, num_steps // 10) if warmup_steps is None else warmup_steps

    module = _module(arch)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1)
    )
    tx = optax.adamw(schedule, weight_decay=weight_decay)
    key = jax.random.key(seed)
    init_key, data_key, aug_key = jax.random.split(key, 3)
    params = module.init(init_key, jnp.zeros((1, *arch.input_shape), images.dtype))["params"]
    state = (params, tx.init(params))
    # Passed to the step as arguments: a closed-over array would become a constant of the
    # compiled program.
    data = (jnp.asarray(images), jnp.asarray(labels))

    def loss_fn(params, x, y):
        _, logits = module.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def epoch_order(epoch):
        return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, data, order, step):
        params, opt_state = state
        data_x, data_y = data
        idx = jax.lax.dynamic_slice(order, ((step % steps_per_epoch) * batch_size,), (batch_size,))
        x = _unit_float(data_x[idx])
        if augment:
            x = _augment(jax.random.fold_in(aug_key, step), x)
        loss, grads = jax.value_and_grad(loss_fn)(params, x, data_y[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    losses = []
    start = time.perf_counter()
    for step in range(num_steps):
        if step % steps_per_epoch == 0:
            # A fresh order of the training set every epoch, a function of the epoch alone (one
            # sort per epoch: sorting all indices in every step would dominate a small network).
            order = epoch_order(step // steps_per_epoch)
        state, loss = train_step(state, data, order, jnp.int32(step))
        losses.append(loss)
        if log_every > 0 and (step + 1) % log_every == 0:
            recent = float(jnp.mean(jnp.stack(losses[-log_every:])))
            log.info(
                "step %d/%d: loss %.4f (%.1f s)",
                step + 1,
                num_steps,
                recent,
                time.perf_counter() - start,
            )
    losses = np.asarray(jnp.stack(losses))
    meta = {
        "dataset": arch.dataset,
        "num_train_examples": int(n),
        "steps": int(num_steps),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "augment": bool(augment),
        "seed": int(seed),
        "final_train_loss": float(losses[-max(1, min(100, num_steps // 10)) :].mean()),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    classifier = Classifier(name=name or arch_name, spec=arch, params=state[0], meta=meta)
    return classifier, losses


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

# --dataset of the command line -> (dataset name of the configs, classifier name).
_CLI_DATASETS = {"mnist": ("MNIST", "mnist"), "cifar10": ("CIFAR10", "cifar10_small")}


def _load_split(dataset: str, split: str, data_path: str | None) -> tuple[np.ndarray, np.ndarray]:

    config_name, clf_name = _CLI_DATASETS[dataset]
    spec = CLASSIFIERS[clf_name]
    source = open_image_source(
        dataset=config_name,
        split=split,
        image_size=spec.image_size,
        num_channels=spec.num_channels,
        path=data_path,
    )
    return source.get(np.arange(len(source)))


def _write_stats(path: str, clf: Classifier, images: np.ndarray, **meta: Any) -> FeatureStats:
    stats = reference_stats(clf, images)
    save_stats(
        path,
        stats.mean,
        stats.cov,
        classifier=clf.name,
        classifier_sha256=clf.fingerprint,
        num_examples=stats.count,
        **meta,
    )
    log.info("wrote %s (%d images)", path, stats.count)
    return stats


def _cmd_train(args: argparse.Namespace) -> None:
    config_name, clf_name = _CLI_DATASETS[args.dataset]
    train_x, train_y = _load_split(args.dataset, "train", args.data_path)
    test_x, test_y = _load_split(args.dataset, "test", args.data_path)
    log.info("training %s on %d images, testing on %d", clf_name, len(train_x), len(test_x))
    clf, _ = train_classifier(
        train_x,
        train_y,
        num_steps=args.num_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        learning_rate=args.learning_rate,
        spec=clf_name,
    )
    accuracy = evaluate_accuracy(clf, test_x, test_y)
    log.info("test accuracy %.4f on %d images", accuracy, len(test_x))
    meta = {
        **clf.meta,
        "data": os.path.basename(os.path.normpath(args.data_path)) if args.data_path else "tfds",
        "num_test_examples": len(test_x),
        "test_accuracy": round(accuracy, 5),
    }
    clf = dataclasses.replace(clf, meta=meta)
    save_classifier(args.out, clf)
    log.info("wrote %s", args.out)
    if args.stats_out:
        _write_stats(args.stats_out, clf, test_x, dataset=config_name, split="test")
    print(json.dumps({"out": args.out, "test_accuracy": accuracy}))


def _cmd_stats(args: argparse.Namespace) -> None:
    config_name, _ = _CLI_DATASETS[args.dataset]
    clf = load_classifier(args.classifier)
    images, _ = _load_split(args.dataset, args.split, args.data_path)
    stats = _write_stats(args.out, clf, images, dataset=config_name, split=args.split)
    print(json.dumps({"out": args.out, "num_examples": stats.count}))


def _cmd_eval(args: argparse.Namespace) -> None:
    clf = load_classifier(args.classifier)
    images, labels = _load_split(args.dataset, args.split, args.data_path)
    print(json.dumps({"accuracy": evaluate_accuracy(clf, images, labels), "n": len(images)}))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scoresde_jax.metrics.classifier",
        description="Train FD classifiers, compute their reference statistics, evaluate them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    data_help = "local data: MNIST IDX folder, CIFAR-10 .npz / python folder (default: TFDS)"

    train = sub.add_parser("train", help="train a classifier and write its weight file")
    train.add_argument("--dataset", choices=sorted(_CLI_DATASETS), required=True)
    train.add_argument("--data_path", default=None, help=data_help)
    train.add_argument("--out", required=True, help="weight file (.npz) to write")
    train.add_argument("--stats_out", default=None, help="also write test-split statistics here")
    train.add_argument("--num_steps", type=int, default=None)
    train.add_argument("--batch_size", type=int, default=128)
    train.add_argument("--learning_rate", type=float, default=2e-3)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_cmd_train)

    stats = sub.add_parser("stats", help="write the feature statistics of a dataset split")
    stats.add_argument("--classifier", required=True, help="name or weight file")
    stats.add_argument("--dataset", choices=sorted(_CLI_DATASETS), required=True)
    stats.add_argument("--data_path", default=None, help=data_help)
    stats.add_argument("--split", choices=("train", "test"), default="test")
    stats.add_argument("--out", required=True)
    stats.set_defaults(func=_cmd_stats)

    evaluate = sub.add_parser("eval", help="print the accuracy of a classifier on a split")
    evaluate.add_argument("--classifier", required=True, help="name or weight file")
    evaluate.add_argument("--dataset", choices=sorted(_CLI_DATASETS), required=True)
    evaluate.add_argument("--data_path", default=None, help=data_help)
    evaluate.add_argument("--split", choices=("train", "test"), default="test")
    evaluate.set_defaults(func=_cmd_eval)

    args = parser.parse_args(argv)
    if getattr(args, "num_steps", 0) is None:
        args.num_steps = {"mnist": 1500, "cifar10": 1200}[args.dataset]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args.func(args)


if __name__ == "__main__":
    main()
