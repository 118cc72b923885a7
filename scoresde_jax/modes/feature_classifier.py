"""Training, reference statistics and accuracy of the FD classifiers
(:mod:`scoresde_jax.metrics.feature_net`): ``python -m scoresde_jax.feature_classifier``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from scoresde_jax.data import open_image_source
from scoresde_jax.metrics.feature_fd import save_classifier_stats
from scoresde_jax.metrics.feature_net import (
    CLASSIFIERS,
    Classifier,
    ClassifierSpec,
    evaluate_accuracy,
    load_classifier,
    save_classifier,
    unit_float,
)
from scoresde_jax.metrics.fid import FeatureStats
from scoresde_jax.run.trainer import Job, fit

log = logging.getLogger(__name__)

# --dataset of the command line -> (dataset name of the configs, classifier name).
DATASETS = {"mnist": ("MNIST", "mnist"), "cifar10": ("CIFAR10", "cifar10_small")}
DEFAULT_STEPS = {"mnist": 1500, "cifar10": 1200}


@flax.struct.dataclass
class FeatureState:
    step: jax.Array
    params: Any
    opt_state: Any


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


def train_feature_classifier(
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
    workdir: str | None = None,
    checkpoint_every: int = 500,
) -> tuple[Classifier, np.ndarray]:
    """Trains a classifier on ``uint8 [n, H, W, C]`` images (or floats in ``[0, 1]``) with AdamW
    and warmup-cosine (warmup default ``min(100, num_steps // 10)``); returns it and the step
    losses. Per-epoch permutations and ``fold_in(key, step)`` augmentation make the run a pure
    function of ``seed``, resumable from ``workdir`` (``None``: in memory, as the shipped weights).
    ``spec``: a :data:`CLASSIFIERS` name or :class:`ClassifierSpec` (default: by image shape)."""
    images, labels = np.asarray(images), np.asarray(labels).astype(np.int32)
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

    module = arch.module()
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1)
    )
    tx = optax.adamw(schedule, weight_decay=weight_decay)
    init_key, data_key, aug_key = jax.random.split(jax.random.key(seed), 3)

    def init():
        x = jnp.zeros((1, *arch.input_shape), images.dtype)
        params = module.init(init_key, x)["params"]
        return FeatureState(jnp.zeros((), jnp.int32), params, tx.init(params))

    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), jax.eval_shape(init)
    )
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
    def train_step(state, data, order):
        data_x, data_y = data
        start = (state.step % steps_per_epoch) * batch_size
        idx = jax.lax.dynamic_slice(order, (start,), (batch_size,))
        x = unit_float(data_x[idx])
        if augment:
            x = _augment(jax.random.fold_in(aug_key, state.step), x)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, x, data_y[idx])
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return FeatureState(state.step + 1, params, opt_state), loss

    losses: list = []
    orders: dict[int, jax.Array] = {}

    def step(state, step: int):
        # A fresh order of the training set every epoch, a function of the epoch alone (one sort
        # per epoch: sorting all indices in every step would dominate a small network).
        epoch = step // steps_per_epoch
        if epoch not in orders:
            orders.clear()
            orders[epoch] = epoch_order(epoch)
        state, loss = train_step(state, data, orders[epoch])
        losses.append(loss)
        return state, {"loss": loss}

    job = Job(
        name=f"feature classifier {name or arch_name}",
        n_iters=num_steps,
        init_state=jax.jit(init),
        abstract_target=lambda: target,
        step=step,
        log_freq=log_every if log_every > 0 else num_steps,
        preempt_freq=checkpoint_every,
        batch_size=batch_size,
        progress=False,
        advice="lower the learning rate.",
    )
    done = fit(job, workdir)
    losses = np.asarray(jnp.stack(losses)) if losses else np.zeros((0,), np.float32)
    tail = losses[-max(1, min(100, num_steps // 10)) :]
    meta = {
        "dataset": arch.dataset,
        "num_train_examples": int(n),
        "steps": int(num_steps),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "augment": bool(augment),
        "seed": int(seed),
        "final_train_loss": float(tail.mean()) if len(tail) else None,
        "train_seconds": round(done.seconds, 1),
    }
    classifier = Classifier(name=name or arch_name, spec=arch, params=done.state.params, meta=meta)
    return classifier, losses


def _load_split(dataset: str, split: str, data_path: str | None) -> tuple[np.ndarray, np.ndarray]:
    config_name, clf_name = DATASETS[dataset]
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
    stats = save_classifier_stats(path, clf, images, **meta)
    log.info("wrote %s (%d images)", path, stats.count)
    return stats


def train(
    dataset: str,
    out: str,
    *,
    data_path: str | None = None,
    stats_out: str | None = None,
    num_steps: int | None = None,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    workdir: str | None = None,
) -> dict:
    """``train``: trains the shipped architecture of ``dataset``, writes its weight file ``out``
    (and the test split's statistics to ``stats_out``)."""
    config_name, clf_name = DATASETS[dataset]
    train_x, train_y = _load_split(dataset, "train", data_path)
    test_x, test_y = _load_split(dataset, "test", data_path)
    log.info("training %s on %d images, testing on %d", clf_name, len(train_x), len(test_x))
    clf, _ = train_feature_classifier(
        train_x,
        train_y,
        num_steps=num_steps or DEFAULT_STEPS[dataset],
        batch_size=batch_size,
        seed=seed,
        learning_rate=learning_rate,
        spec=clf_name,
        workdir=workdir,
    )
    test_accuracy = evaluate_accuracy(clf, test_x, test_y)
    log.info("test accuracy %.4f on %d images", test_accuracy, len(test_x))
    meta = {
        **clf.meta,
        "data": os.path.basename(os.path.normpath(data_path)) if data_path else "tfds",
        "num_test_examples": len(test_x),
        "test_accuracy": round(test_accuracy, 5),
    }
    clf = dataclasses.replace(clf, meta=meta)
    save_classifier(out, clf)
    log.info("wrote %s", out)
    if stats_out:
        _write_stats(stats_out, clf, test_x, dataset=config_name, split="test")
    return {"out": out, "test_accuracy": test_accuracy}


def stats(classifier: str, dataset: str, out: str, *, split="test", data_path=None) -> dict:
    """``stats``: the feature statistics of a dataset split, written to ``out``."""
    clf = load_classifier(classifier)
    images, _ = _load_split(dataset, split, data_path)
    s = _write_stats(out, clf, images, dataset=DATASETS[dataset][0], split=split)
    return {"out": out, "num_examples": s.count}


def accuracy(classifier: str, dataset: str, *, split="test", data_path=None) -> dict:
    """``eval``: the top-1 accuracy of a classifier on a dataset split."""
    clf = load_classifier(classifier)
    images, labels = _load_split(dataset, split, data_path)
    return {"accuracy": evaluate_accuracy(clf, images, labels), "n": len(images)}
