"""Small image classifiers whose penultimate features give a Fréchet distance (FD-MNIST, ...)
where the Inception weights (about 100 MB) are not at hand or do not suit the data (28x28 digits).
Weights and test-split statistics ship in ``weights/`` (its README says how they were made); no
normalization layers, so padding a batch changes no image's features.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh

from scoresde_jax.core.mesh import batch_sharding, map_fixed_batches, put_global_batch, replicated
from scoresde_jax.io.files import atomic_savez

# The shipped weight and statistics files (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_FORMAT_VERSION = 1  # of the weight-file layout, recorded in its ``meta``


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """Architecture and data of one classifier: ``dataset`` as in the configs (``"MNIST"``);
    ``stages``: channels of each stage's 3x3 convs (ReLU; a 2x2 max pool ends a stage);
    ``augment``: train with random flips and 4-pixel-padded random crops."""

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

    def module(self) -> FeatureCNN:
        return FeatureCNN(self.stages, self.feature_dim, self.num_classes)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ClassifierSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        kwargs["stages"] = tuple(tuple(int(c) for c in s) for s in kwargs["stages"])
        return cls(**kwargs)


# The shipped classifiers (weights/README.md says how they were trained).
CLASSIFIERS: dict[str, ClassifierSpec] = {
    "mnist": ClassifierSpec("MNIST", 28, 1, stages=((32,), (64,), (128,))),
    "cifar10_small": ClassifierSpec("CIFAR10", 32, 3, ((32, 32), (64, 64), (128,)), augment=True),
}


class FeatureCNN(nn.Module):
    """Convolution stages, a ReLU feature layer and a linear classifier: NHWC images (uint8 or
    float in ``[0, 1]``) -> ``(features [B, feature_dim], logits [B, num_classes])``."""

    stages: Sequence[Sequence[int]]
    feature_dim: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = unit_float(images) * 2.0 - 1.0
        for i, stage in enumerate(self.stages):
            for j, channels in enumerate(stage):
                x = nn.relu(nn.Conv(channels, (3, 3), name=f"conv{i}_{j}")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        features = nn.relu(nn.Dense(self.feature_dim, name="features")(x))
        logits = nn.Dense(self.num_classes, name="logits")(features)
        return features, logits


def unit_float(images: jax.Array) -> jax.Array:
    """``uint8 [0, 255]`` -> float32 ``[0, 1]``; float input is taken to be in ``[0, 1]``."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
    """A trained classifier; :meth:`features` evaluates it eagerly, :func:`feature_fn` compiled."""

    name: str
    spec: ClassifierSpec
    params: Any
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def module(self) -> FeatureCNN:
        return self.spec.module()

    def features(self, images: jax.Array) -> jax.Array:
        """Penultimate-layer features ``[B, feature_dim]`` of NHWC images."""
        return self.module.apply({"params": self.params}, jnp.asarray(images))[0]

    @property
    def fingerprint(self) -> str:
        return params_fingerprint(self.params)


def params_fingerprint(params: Any) -> str:
    """SHA-256 of a parameter tree (names, dtypes, shapes, bytes), recorded with reference
    statistics so that those of other weights are never compared."""
    h = hashlib.sha256()
    for key, value in sorted(traverse_util.flatten_dict(params, sep="/").items()):
        a = np.ascontiguousarray(np.asarray(value))
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_classifier(path: str | os.PathLike, classifier: Classifier) -> None:
    """Writes ``classifier`` as a flat ``.npz`` (the layout of weights/README.md)."""
    flat = traverse_util.flatten_dict({"params": classifier.params}, sep="/")
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in flat.items()}
    meta = {
        **classifier.meta,
        "format_version": _FORMAT_VERSION,
        "name": classifier.name,
        "spec": dataclasses.asdict(classifier.spec),  # JSON writes the tuples as lists
        "input_shape": list(classifier.spec.input_shape),
        "feature_dim": classifier.spec.feature_dim,
        "num_params": int(sum(a.size for a in arrays.values())),
        "params_sha256": params_fingerprint(classifier.params),
    }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    atomic_savez(path, **arrays)


def resolve_file(name_or_path: str | os.PathLike, kind: str) -> Path:
    """A shipped file by classifier name, or ``name_or_path`` itself when it is a path."""
    text = os.fspath(name_or_path)
    if text in CLASSIFIERS:
        return WEIGHTS_DIR / f"{text}_{'classifier' if kind == 'weights' else 'test_stats'}.npz"
    looks_like_path = os.sep in text or text.endswith(".npz") or Path(text).exists()
    if not looks_like_path:
        raise ValueError(
            f"unknown classifier {text!r}; use one of {sorted(CLASSIFIERS)} or the path of an "
            f".npz {kind} file"
        )
    return Path(text).expanduser()


def load_classifier(name_or_path: str | os.PathLike) -> Classifier:
    """Loads a shipped classifier by name (``"mnist"``, ``"cifar10_small"``) or a weight file."""
    path = resolve_file(name_or_path, "weights")
    if not path.exists():
        problem = f"classifier weights {path} not found"
        if os.fspath(name_or_path) in CLASSIFIERS:
            problem += "; the package data (scoresde_jax/metrics/weights/*.npz) is missing from "
            problem += "this installation"
        raise FileNotFoundError(problem)
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
    """The shipped classifier for a dataset (case-insensitive) at a resolution, e.g.
    ``("MNIST", 28, 1) -> "mnist"``, or ``None``."""
    key = (str(dataset_name).lower(), image_size, num_channels)
    for name, spec in CLASSIFIERS.items():
        if key == (spec.dataset.lower(), spec.image_size, spec.num_channels):
            return name
    return None


def feature_fn(
    classifier: Classifier,
    mesh: Mesh | None = None,
    *,
    batch_size: int = 500,
    with_logits: bool = False,
) -> Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """A compiled ``images [n, H, W, C] -> features [n, feature_dim]`` (numpy float32; with
    ``with_logits`` also the logits), ``batch_size`` images per call (the last chunk padded).
    With a ``mesh``, chunks (global: the same on every process) are split over its ``data`` axis,
    ``batch_size`` rounded up to a multiple of it."""
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
