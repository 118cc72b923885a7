"""Tests of the FD classifiers (scoresde_jax.metrics.feature_net / feature_fd): the shipped
networks, their files, the Fréchet distance in their feature space, training and its command line.

The MNIST and partial CIFAR-10 files come from ``$SCORESDE_SHARED/data`` (default: ``shared/``
beside the repository); the tests that need them are skipped, with the reason, when absent.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from scoresde_jax.core.mesh import make_data_mesh
from scoresde_jax.data import open_image_source
from scoresde_jax.metrics.feature_fd import classifier_fd, load_reference_stats, reference_stats
from scoresde_jax.metrics.feature_net import (
    CLASSIFIERS,
    WEIGHTS_DIR,
    Classifier,
    ClassifierSpec,
    classifier_for_dataset,
    evaluate_accuracy,
    feature_fn,
    load_classifier,
    params_fingerprint,
    save_classifier,
)
from scoresde_jax.metrics.fid import FeatureStats, Stats, save_stats
from scoresde_jax.modes.feature_classifier import train_feature_classifier

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCORESDE_SHARED", REPO.parent / "shared"))
MNIST = SHARED / "data" / "mnist"
CIFAR = SHARED / "data" / "cifar10_partial" / "cifar10_partial_exact.npz"

# What the shipped files were trained on (weights/README.md).
EXPECTED = {
    "mnist": {"num_train_examples": 60_000, "num_test_examples": 10_000, "min_accuracy": 0.985},
    "cifar10_small": {"num_train_examples": 8_068, "num_test_examples": 1_017, "min_accuracy": 0.5},
}


def _split(dataset, split):
    path = MNIST if dataset == "MNIST" else CIFAR
    if not path.exists():
        pytest.skip(f"{path} is absent; set SCORESDE_SHARED to the folder holding data/")
    size, channels = (28, 1) if dataset == "MNIST" else (32, 3)
    source = open_image_source(
        dataset=dataset, split=split, image_size=size, num_channels=channels, path=str(path)
    )
    return source.get(np.arange(len(source)))


@pytest.fixture(scope="module")
def mnist():
    return load_classifier("mnist")


@pytest.fixture(scope="module")
def mnist_test():
    return _split("MNIST", "test")


@pytest.fixture(scope="module")
def mnist_features(mnist):
    return feature_fn(mnist, batch_size=1000)


def _stats(features):
    return FeatureStats().update(features).to_stats()


# --------------------------------------------------------------------------------------------------
# The shipped files
# --------------------------------------------------------------------------------------------------


def test_mnist_accuracy_on_test_images(mnist, mnist_test):
    images, labels = mnist_test
    accuracy = evaluate_accuracy(mnist, images[:2000], labels[:2000], batch_size=1000)
    assert accuracy >= 0.98


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_shipped_metadata_matches_file(name):
    path = WEIGHTS_DIR / f"{name}_classifier.npz"
    assert path.stat().st_size < 2 * 1024 * 1024
    clf = load_classifier(name)
    spec, meta = CLASSIFIERS[name], clf.meta
    assert clf.name == meta["name"] == name
    assert clf.spec == spec
    assert tuple(meta["input_shape"]) == spec.input_shape
    kernel = clf.params["features"]["kernel"]
    assert meta["feature_dim"] == kernel.shape[1] == spec.feature_dim
    assert clf.params["logits"]["kernel"].shape == (spec.feature_dim, spec.num_classes)
    assert meta["num_params"] == sum(x.size for x in jax.tree.leaves(clf.params))
    assert meta["params_sha256"] == clf.fingerprint
    for key in ("num_train_examples", "num_test_examples"):
        assert meta[key] == EXPECTED[name][key]
    assert meta["test_accuracy"] >= EXPECTED[name]["min_accuracy"]
    assert meta["steps"] > 0 and meta["dataset"] == spec.dataset
    # The reference statistics belong to these weights.
    stats, stats_meta = load_reference_stats(name)
    assert stats.mu.shape == (spec.feature_dim,)
    assert stats.sigma.shape == (spec.feature_dim, spec.feature_dim)
    assert stats_meta["classifier"] == name
    assert stats_meta["classifier_sha256"] == clf.fingerprint
    assert stats_meta["split"] == "test"
    assert stats_meta["num_examples"] == EXPECTED[name]["num_test_examples"]


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_shipped_reference_stats_reproduced(name):
    clf = load_classifier(name)
    images, _ = _split(clf.spec.dataset, "test")
    stats = reference_stats(clf, images, batch_size=1000)
    shipped, _ = load_reference_stats(name)
    np.testing.assert_allclose(stats.mean, shipped.mu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.cov, shipped.sigma, rtol=1e-3, atol=1e-5)
    out = classifier_fd(images, name, classifier=clf, batch_size=1000)
    assert out[f"fd_{name}_num_samples"] == len(images)
    assert out[f"fd_{name}"] < 1e-6 * np.trace(shipped.sigma)


# --------------------------------------------------------------------------------------------------
# The distance
# --------------------------------------------------------------------------------------------------


def _shift(images, pixels):
    return np.roll(images, (pixels, pixels), axis=(1, 2))


def _blur(images, radius=1):
    # Box blur of width 2 * radius + 1, in float, back to uint8.
    x = images.astype(np.float32)
    width = 2 * radius + 1
    for axis in (1, 2):
        padded = np.pad(
            x, [(0, 0)] + [(radius, radius) if a == axis else (0, 0) for a in (1, 2, 3)]
        )
        x = sum(np.take(padded, range(i, i + x.shape[axis]), axis=axis) for i in range(width))
        x /= width
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def test_fd_orders_real_corrupted_and_noise(mnist, mnist_test, mnist_features):
    images, _ = mnist_test
    first, second = images[:5000], images[5000:]
    ref = _stats(mnist_features(second))
    fd = {
        "halves": classifier_fd(first, ref, classifier=mnist, batch_size=1000)["fd_mnist"],
        "shifted": classifier_fd(_shift(first, 5), ref, classifier=mnist, batch_size=1000),
        "blurred": classifier_fd(_blur(first), ref, classifier=mnist, batch_size=1000),
    }
    fd["shifted"], fd["blurred"] = fd["shifted"]["fd_mnist"], fd["blurred"]["fd_mnist"]
    noise = np.random.default_rng(0).integers(0, 256, (2000, 28, 28, 1), dtype=np.uint8)
    fd["noise"] = classifier_fd(noise, ref, classifier=mnist, batch_size=1000)["fd_mnist"]
    # Two halves of the test set are close; every corruption is far, noise farthest. (Values
    # with the shipped weights: halves 16, shifted 485, blurred 321, noise 868.)
    assert fd["halves"] < 0.1 * min(fd["shifted"], fd["blurred"]), fd
    assert fd["noise"] > max(fd["shifted"], fd["blurred"]), fd
    # Against the shipped statistics of the whole test set, a half is close as well.
    shipped = classifier_fd(first, "mnist", batch_size=1000)
    assert shipped["fd_mnist"] < 0.1 * min(fd["shifted"], fd["blurred"])
    assert shipped["fd_mnist_num_samples"] == 5000


def test_fd_streaming_equals_one_shot(mnist):
    # Any images do: the invariance is a property of the computation, not of the data.
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (600, 28, 28, 1), dtype=np.uint8)
    images[:300] = np.minimum(images[:300], 60)
    one_shot = classifier_fd(images, "mnist", classifier=mnist, batch_size=256)
    sizes = [1, 250, 7, 342]
    batches = np.split(images, np.cumsum(sizes)[:-1])
    streamed = classifier_fd(iter(batches), "mnist", classifier=mnist, batch_size=256)
    assert streamed["fd_mnist_num_samples"] == one_shot["fd_mnist_num_samples"] == 600
    np.testing.assert_allclose(streamed["fd_mnist"], one_shot["fd_mnist"], rtol=1e-6)
    # Padding the last chunk of a batch does not change the features of the real rows.
    fn = feature_fn(mnist, batch_size=256)
    np.testing.assert_allclose(fn(images[:3]), fn(images)[:3], rtol=1e-5, atol=1e-6)


def test_feature_fn_mesh_and_float_input(mnist):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (50, 28, 28, 1), dtype=np.uint8)
    plain = feature_fn(mnist, batch_size=20)(images)
    assert plain.shape == (50, 128) and plain.dtype == np.float32
    np.testing.assert_allclose(plain, np.asarray(mnist.features(images)), rtol=1e-4, atol=1e-5)
    mesh = make_data_mesh(min(4, jax.device_count()))
    sharded, logits = feature_fn(mnist, mesh, batch_size=20, with_logits=True)(images)
    np.testing.assert_allclose(sharded, plain, rtol=1e-4, atol=1e-5)
    assert logits.shape == (50, 10)
    as_float = feature_fn(mnist, batch_size=20)(images.astype(np.float32) / 255.0)
    np.testing.assert_allclose(as_float, plain, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"takes images \[n, 28, 28, 1\]"):
        feature_fn(mnist)(np.zeros((4, 32, 32, 3), np.uint8))


def test_fd_rejects_statistics_of_other_weights(mnist, tmp_path):
    path = tmp_path / "other_stats.npz"
    save_stats(path, np.zeros(128), np.eye(128), classifier="mnist", classifier_sha256="0" * 64)
    images = np.zeros((4, 28, 28, 1), np.uint8)
    with pytest.raises(ValueError, match="other weights"):
        classifier_fd(images, str(path), batch_size=4)
    with pytest.raises(ValueError, match="give classifier="):
        classifier_fd(images, Stats(np.zeros(128), np.eye(128)))


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def test_training_separates_two_constant_classes():
    # Dark and bright constant images (with a little noise): a few dozen steps must suffice.
    spec = ClassifierSpec(
        dataset="toy",
        image_size=8,
        num_channels=3,
        stages=((8,),),
        feature_dim=16,
        num_classes=2,
        augment=True,
    )
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 2
    level = np.where(labels == 1, 190, 60)[:, None, None, None]
    images = np.clip(level + rng.integers(-20, 21, (64, 8, 8, 3)), 0, 255).astype(np.uint8)
    clf, losses = train_feature_classifier(
        images, labels, num_steps=40, batch_size=16, seed=0, learning_rate=1e-2, spec=spec
    )
    assert losses.shape == (40,) and np.all(np.isfinite(losses))
    assert losses[-5:].mean() < 0.1 * losses[:5].mean()
    assert evaluate_accuracy(clf, images, labels) == 1.0
    assert clf.name == "custom" and clf.meta["num_train_examples"] == 64
    assert clf.meta["steps"] == 40 and clf.meta["augment"] is True


def _two_classes():
    spec = ClassifierSpec(
        dataset="toy", image_size=8, num_channels=3, stages=((8,),), feature_dim=16, num_classes=2
    )
    rng = np.random.default_rng(1)
    labels = np.arange(32) % 2
    level = np.where(labels == 1, 190, 60)[:, None, None, None]
    images = np.clip(level + rng.integers(-20, 21, (32, 8, 8, 3)), 0, 255).astype(np.uint8)
    return spec, images, labels


def test_training_resumes_exactly_from_a_checkpoint(tmp_path):
    # The one training loop: checkpoints at 6 and 12; a run that lost everything after step 6
    # (only that checkpoint survives) ends where the uninterrupted run does, bit for bit.
    spec, images, labels = _two_classes()
    kw = dict(num_steps=12, batch_size=8, learning_rate=1e-2, spec=spec, checkpoint_every=6)
    in_memory, _ = train_feature_classifier(images, labels, **kw)
    straight, losses = train_feature_classifier(images, labels, workdir=str(tmp_path / "a"), **kw)
    assert sorted(os.listdir(tmp_path / "a" / "checkpoints")) == ["12", "6"]
    assert losses.shape == (12,)
    src = tmp_path / "a" / "checkpoints" / "6"
    shutil.copytree(src, tmp_path / "b" / "checkpoints" / "6")
    resumed, rest = train_feature_classifier(images, labels, workdir=str(tmp_path / "b"), **kw)
    assert rest.shape == (6,)
    np.testing.assert_array_equal(rest, losses[6:])
    for a, b, c in zip(
        *(jax.tree.leaves(x.params) for x in (in_memory, straight, resumed)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(b, c)


def test_command_line(tmp_path):
    cmd = [sys.executable, "-m", "scoresde_jax.feature_classifier"]
    run = lambda *a: subprocess.run([*cmd, *a], cwd=REPO, capture_output=True, text=True)
    helped = run("--help")
    assert helped.returncode == 0 and "--dataset" in helped.stdout and "train" in helped.stdout
    missing = run("stats", "--dataset", "mnist")
    assert missing.returncode == 2 and "--classifier" in missing.stderr
    wrong = run("fit", "--dataset", "mnist")
    assert wrong.returncode == 2 and "train" in wrong.stderr
    if not MNIST.is_dir():
        pytest.skip(f"MNIST files not found in {MNIST}")
    out = run("eval", "--classifier", "mnist", "--dataset", "mnist", "--data_path", str(MNIST))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["n"] == 10_000 and report["accuracy"] > 0.98


# --------------------------------------------------------------------------------------------------
# Names, files, errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "size", "channels", "expected"),
    [
        ("MNIST", 28, 1, "mnist"),
        ("mnist", 28, 1, "mnist"),
        ("CIFAR10", 32, 3, "cifar10_small"),
        ("cifar10", 32, 3, "cifar10_small"),
        ("MNIST", 32, 1, None),
        ("MNIST", 28, 3, None),
        ("CIFAR10", 32, 1, None),
        ("CIFAR10", 64, 3, None),
        ("SVHN", 32, 3, None),
        ("CELEBA", 64, 3, None),
    ],
)
def test_classifier_for_dataset(dataset, size, channels, expected):
    assert classifier_for_dataset(dataset, size, channels) == expected


def test_load_by_name_and_by_path(mnist, tmp_path):
    path = WEIGHTS_DIR / "mnist_classifier.npz"
    for loaded in (load_classifier(str(path)), load_classifier(path)):
        assert loaded.fingerprint == mnist.fingerprint
        assert loaded.spec == mnist.spec
    copy = tmp_path / "copy.npz"
    save_classifier(copy, mnist)
    again = load_classifier(copy)
    assert again.fingerprint == mnist.fingerprint
    assert again.meta["test_accuracy"] == mnist.meta["test_accuracy"]
    with np.load(copy) as data:
        assert "params/features/kernel" in data.files
        assert json.loads(str(data["meta"]))["name"] == "mnist"
    stats, meta = load_reference_stats(WEIGHTS_DIR / "mnist_test_stats.npz")
    assert meta["classifier"] == "mnist" and stats.mu.shape == (128,)


def test_params_fingerprint_sees_every_value(mnist):
    changed = jax.tree.map(lambda x: x, mnist.params)
    changed["logits"]["bias"] = changed["logits"]["bias"].at[3].add(1e-6)
    assert params_fingerprint(changed) != mnist.fingerprint
    assert isinstance(mnist, Classifier)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown classifier 'imagenet'.*cifar10_small.*mnist"):
        load_classifier("imagenet")
    with pytest.raises(ValueError, match="unknown classifier 'imagenet'"):
        load_reference_stats("imagenet")
    with pytest.raises(ValueError, match="unknown classifier 'imagenet'"):
        classifier_fd(np.zeros((2, 28, 28, 1), np.uint8), "imagenet")
    with pytest.raises(FileNotFoundError):
        load_classifier("/nonexistent/classifier.npz")
