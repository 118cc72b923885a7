"""Image sources and host-side batching: every reader against ground truth, determinism, sharding.

The MNIST and partial CIFAR-10 files come from ``$SCORESDE_SHARED/data`` (default: ``shared/``
beside the repository); the tests that need them are skipped when it is absent. Everything else
is written by the tests themselves.
"""

import gzip
import hashlib
import itertools
import os
import pickle
import tarfile
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec
from PIL import Image

from scoresde_jax.core import mesh as sharding
from scoresde_jax.core.mesh import to_global_array
from scoresde_jax.data import (
    ArraySource,
    TrainIterator,
    detect_source,
    eval_batches,
    num_eval_batches,
    open_image_source,
    prepare_image,
    read_idx,
    to_model_space,
    train_batch,
    train_example_indices,
)
from scoresde_jax.data.geometry import convert_channels
from scoresde_jax.io import tfrecord
from scoresde_jax.io.tfrecord import parse_tf_example, write_tfrecord_images
from scoresde_jax.run import experiment

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCORESDE_SHARED", REPO.parent / "shared"))
MNIST = SHARED / "data" / "mnist"
CIFAR_NPZ = SHARED / "data" / "cifar10_partial" / "cifar10_partial_exact.npz"

# The class counts of the official MNIST training and test sets.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _needs(path: Path):
    if not path.exists():
        pytest.skip(f"{path} is absent; set SCORESDE_SHARED to the folder holding data/")


def _rgb(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# MNIST IDX files and the CIFAR-10 npz (real data).


@pytest.fixture(scope="module")
def mnist_train():
    _needs(MNIST)
    return open_image_source(
        dataset="MNIST", split="train", image_size=28, num_channels=1, path=str(MNIST)
    )


def test_mnist_idx_counts_and_labels(mnist_train):
    s = mnist_train
    assert detect_source(MNIST) == "mnist_idx"
    assert len(s) == 60000 and s.image_shape == (28, 28, 1) and s.num_classes == 10
    assert s.images.dtype == np.uint8 and s.labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(s.labels, minlength=10), MNIST_TRAIN_COUNTS)
    np.testing.assert_array_equal(s.labels[:5], [5, 0, 4, 1, 9])
    test = open_image_source(
        dataset="mnist", split="test", image_size=28, num_channels=1, path=str(MNIST)
    )
    assert len(test) == 10000
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), MNIST_TEST_COUNTS)


def test_mnist_pixels_match_raw_bytes(mnist_train):
    with gzip.open(MNIST / "train-images-idx3-ubyte.gz") as f:
        raw = f.read()
    assert raw[:4] == b"\x00\x00\x08\x03"  # uint8, three dimensions
    for i, r, c in [(0, 14, 14), (1, 10, 5), (59999, 20, 13), (12345, 7, 21)]:
        assert mnist_train.images[i, r, c, 0] == raw[16 + i * 784 + r * 28 + c]
    images, labels = mnist_train.get(np.array([59999, 0]))
    np.testing.assert_array_equal(
        images[1, :, :, 0], np.frombuffer(raw[16 : 16 + 784], np.uint8).reshape(28, 28)
    )
    assert labels[1] == 5


def test_mnist_resized_and_rgb(mnist_train):
    s = open_image_source(
        dataset="MNIST", split="test", image_size=32, num_channels=3, path=str(MNIST)
    )
    assert s.image_shape == (32, 32, 3) and len(s) == 10000
    x, _ = s.get(np.array([3]))
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # grayscale repeated


def test_colored_mnist_tints_each_digit_with_one_saturated_color(mnist_train):
    s = open_image_source(
        dataset="colored_mnist", split="train", image_size=28, num_channels=3, path=str(MNIST)
    )
    assert s.image_shape == (28, 28, 3) and len(s) == 60000 and s.num_classes == 10
    idx = np.array([0, 1, 2, 59999, 777])
    x, labels = s.get(idx)
    gray, gray_labels = mnist_train.get(idx)
    np.testing.assert_array_equal(labels, gray_labels)
    # Full saturation and value: the brightest channel is the gray digit itself, the darkest is 0.
    np.testing.assert_array_equal(x.max(-1), gray[..., 0])
    assert (x.min(-1) == 0).all()
    # One color per image: every pixel is the gray value times that image's color.
    colors = s.colors(idx)
    expected = np.rint(gray.astype(np.float64) * colors[:, None, None, :])
    np.testing.assert_array_equal(x, expected)
    # Deterministic, different between examples and splits, spread over the hue circle.
    np.testing.assert_array_equal(s.get(idx)[0], x)
    test = open_image_source(
        dataset="colored_mnist", split="test", image_size=28, num_channels=3, path=str(MNIST)
    )
    assert not np.allclose(test.colors(idx), colors)
    hue_bins = np.bincount((np.argmax(s.colors(np.arange(600)), -1)), minlength=3)
    assert hue_bins.min() > 150  # red, green and blue dominate a third of the colors each
    with pytest.raises(ValueError, match="num_channels=3"):
        open_image_source(
            dataset="colored_mnist", split="train", image_size=28, num_channels=1, path=str(MNIST)
        )


def test_idx_errors(tmp_path):
    _needs(MNIST)
    raw = gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "short-idx1-ubyte").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="10000"):
        read_idx(tmp_path / "short-idx1-ubyte")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(
        b"\x00\x00\x08\x03" + b"\x00\x00\x00\x01" * 3 + b"\x07"
    )
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        open_image_source(
            dataset="MNIST", split="train", image_size=28, num_channels=1, path=str(tmp_path)
        )
    with pytest.raises(ValueError, match="expected 1 labels"):
        open_image_source(
            dataset="MNIST", split="test", image_size=1, num_channels=1, path=str(tmp_path)
        )


def test_cifar_npz():
    _needs(CIFAR_NPZ)
    train = open_image_source(
        dataset="CIFAR10", split="train", image_size=32, num_channels=3, path=str(CIFAR_NPZ)
    )
    test = open_image_source(
        dataset="cifar10", split="test", image_size=32, num_channels=3, path=str(CIFAR_NPZ)
    )
    assert (len(train), len(test)) == (8068, 1017)
    assert train.image_shape == (32, 32, 3) and train.num_classes == 10
    with np.load(CIFAR_NPZ) as f:
        np.testing.assert_array_equal(train.images, f["train_images"])
        np.testing.assert_array_equal(test.labels, f["test_labels"])


def test_npz_single_split_and_errors(tmp_path):
    images = _rgb(5, 8, 8)
    np.savez(tmp_path / "one.npz", images=images)
    s = open_image_source(
        dataset="mine", split="test", image_size=8, num_channels=3, path=str(tmp_path / "one.npz")
    )
    np.testing.assert_array_equal(s.get(np.arange(5))[0], images)
    np.testing.assert_array_equal(s.labels, -1)
    assert s.num_classes is None
    np.savez(tmp_path / "train.npz", train_images=images)
    with pytest.raises(ValueError, match="test_images"):
        open_image_source(
            dataset="x",
            split="test",
            image_size=8,
            num_channels=3,
            path=str(tmp_path / "train.npz"),
        )
    np.savez(tmp_path / "float.npz", images=images.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        open_image_source(
            dataset="x",
            split="train",
            image_size=8,
            num_channels=3,
            path=str(tmp_path / "float.npz"),
        )
    np.savez(tmp_path / "nchw.npz", images=images.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="channels last"):
        open_image_source(
            dataset="x",
            split="train",
            image_size=8,
            num_channels=3,
            path=str(tmp_path / "nchw.npz"),
        )


# ------------------------------------------------------------------------------------------------
# CIFAR-10 python archive (synthetic, same layout as the official download).


def _write_cifar(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    chw = {}
    labels = {}
    for split, names in [
        ("train", [f"data_batch_{i}" for i in range(1, 6)]),
        ("test", ["test_batch"]),
    ]:
        parts, labs = [], []
        for name in names:
            data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
            lab = rng.integers(0, 10, 3).tolist()
            with open(folder / name, "wb") as f:
                pickle.dump({b"batch_label": b"x", b"data": data, b"labels": lab}, f, protocol=2)
            parts.append(data)
            labs += lab
        chw[split] = np.concatenate(parts).reshape(-1, 3, 32, 32)
        labels[split] = np.asarray(labs)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return chw["train"], labels["train"], chw["test"], labels["test"]


def test_cifar_python_archive_and_folder(tmp_path):
    train_chw, train_labels, test_chw, test_labels = _write_cifar(tmp_path)
    for path in [tmp_path / "cifar-10-python.tar.gz", tmp_path / "cifar-10-batches-py", tmp_path]:
        assert detect_source(path) == "cifar10_python"
        for split, chw, labels in [
            ("train", train_chw, train_labels),
            ("test", test_chw, test_labels),
        ]:
            s = open_image_source(
                dataset="CIFAR10", split=split, image_size=32, num_channels=3, path=str(path)
            )
            assert len(s) == len(chw) and s.num_classes == 10
            images, got_labels = s.get(np.arange(len(s)))
            # Rows are CHW: pixel (r, c) of channel k is byte k * 1024 + r * 32 + c.
            np.testing.assert_array_equal(images, chw.transpose(0, 2, 3, 1))
            assert images[1, 2, 3, 1] == chw.reshape(len(chw), 3072)[1, 1024 + 2 * 32 + 3]
            np.testing.assert_array_equal(got_labels, labels)


def test_cifar_pickle_may_not_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        open_image_source(
            dataset="CIFAR10", split="test", image_size=32, num_channels=3, path=str(tmp_path)
        )


# ------------------------------------------------------------------------------------------------
# Image folders.


def test_folder_with_classes_round_trips(tmp_path):
    images = _rgb(6, 12, 12, seed=2)
    for i, image in enumerate(images):
        folder = tmp_path / ("cat" if i % 2 else "dog")
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    assert detect_source(tmp_path) == "folder"
    s = open_image_source(
        dataset="pets", split="train", image_size=12, num_channels=3, path=str(tmp_path)
    )
    assert len(s) == 6 and s.num_classes == 2
    got, labels = s.get(np.arange(6))
    # Sorted paths: cat/01, cat/03, cat/05, dog/00, dog/02, dog/04; classes sorted: cat=0, dog=1.
    np.testing.assert_array_equal(got, images[[1, 3, 5, 0, 2, 4]])
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])

    gray = open_image_source(
        dataset="pets", split="train", image_size=12, num_channels=1, path=str(tmp_path)
    )
    x = images[1].astype(np.int64)
    luma = (299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2] + 500) // 1000
    np.testing.assert_array_equal(gray.get(np.array([0]))[0][0, ..., 0], luma)


def test_folder_mixed_layout_grayscale_and_split_dirs(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (10, 14), dtype=np.uint8)
    (tmp_path / "train" / "sub").mkdir(parents=True)
    Image.fromarray(a).save(tmp_path / "train" / "a.png")
    Image.fromarray(a[::-1]).save(tmp_path / "train" / "sub" / "b.bmp")
    s = open_image_source(
        dataset="faces", split="train", image_size=10, num_channels=1, path=str(tmp_path)
    )
    assert len(s) == 2 and s.num_classes is None and s.image_shape == (10, 10, 1)
    images, labels = s.get(np.array([0, 1]))
    np.testing.assert_array_equal(labels, [-1, -1])
    np.testing.assert_array_equal(images[0, ..., 0], a[:, 2:12])  # smaller side kept, center crop
    rgb = open_image_source(
        dataset="faces", split="train", image_size=10, num_channels=3, path=str(tmp_path)
    )
    np.testing.assert_array_equal(
        rgb.get(np.array([1]))[0][0], np.repeat(a[::-1, 2:12, None], 3, -1)
    )
    with pytest.raises(FileNotFoundError, match="'test' sub-folder"):
        open_image_source(
            dataset="faces", split="test", image_size=10, num_channels=1, path=str(tmp_path)
        )


# ------------------------------------------------------------------------------------------------
# TFRecords (FFHQ / CelebA-HQ layout).


def test_crc32c_known_values():
    assert tfrecord.crc32c(b"123456789") == 0xE3069283
    assert tfrecord.crc32c(b"") == 0
    data = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    # The chunked fast path agrees with the byte-at-a-time definition.
    assert tfrecord.crc32c(data) == tfrecord._crc32c_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    masked = tfrecord.masked_crc32c(b"123456789")
    crc = 0xE3069283
    assert masked == ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def test_tfrecord_round_trip_and_crc(tmp_path):
    images = _rgb(7, 8, 8, seed=4)
    labels = np.arange(7) * 3 - 5
    path = tmp_path / "faces-r03.tfrecords"
    write_tfrecord_images(path, images, labels)
    assert detect_source(path) == "tfrecord" and detect_source(tmp_path) == "tfrecord"
    for source_path in [path, tmp_path, tmp_path / "*.tfrecords"]:
        s = open_image_source(
            dataset="FFHQ",
            split="train",
            image_size=8,
            num_channels=3,
            path=str(source_path),
            verify_crc=True,
        )
        got, got_labels = s.get(np.array([6, 0, 3]))
        np.testing.assert_array_equal(got, images[[6, 0, 3]])
        np.testing.assert_array_equal(got_labels, labels[[6, 0, 3]])
    index = tfrecord.index_tfrecords([path], verify_crc=True)
    example = parse_tf_example(tfrecord.read_record(index, 2, verify_crc=True))
    np.testing.assert_array_equal(example["shape"], [3, 8, 8])
    assert example["data"] == [images[2].transpose(2, 0, 1).tobytes()]

    # Flip one pixel byte of record 4: caught with verification, invisible without it.
    raw = bytearray(path.read_bytes())
    pixels = raw.find(images[4].transpose(2, 0, 1).tobytes(), int(index.offsets[4]))
    assert index.offsets[4] < pixels < index.offsets[4] + index.lengths[4]
    raw[pixels + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    s = open_image_source(
        dataset="FFHQ",
        split="train",
        image_size=8,
        num_channels=3,
        path=str(path),
        verify_crc=True,
    )
    s.get(np.array([3, 5]))
    with pytest.raises(ValueError, match="CRC"):
        s.get(np.array([4]))
    fast = open_image_source(
        dataset="FFHQ", split="train", image_size=8, num_channels=3, path=str(path)
    )
    assert not np.array_equal(fast.get(np.array([4]))[0][0], images[4])


def test_tfrecord_picks_resolution(tmp_path):
    write_tfrecord_images(tmp_path / "ffhq-r02.tfrecords", _rgb(3, 4, 4))
    big = _rgb(2, 8, 8, seed=5)
    write_tfrecord_images(tmp_path / "ffhq-r03.tfrecords", big)
    s = open_image_source(
        dataset="FFHQ", split="train", image_size=8, num_channels=3, path=str(tmp_path)
    )
    assert len(s) == 2
    np.testing.assert_array_equal(s.get(np.arange(2))[0], big)
    with pytest.raises(ValueError, match=r"ffhq-r02.tfrecords: 4x4, ffhq-r03.tfrecords: 8x8"):
        open_image_source(
            dataset="CelebAHQ", split="train", image_size=16, num_channels=3, path=str(tmp_path)
        )
    with pytest.raises(ValueError, match="config.data.path"):
        open_image_source(dataset="FFHQ", split="train", image_size=8, num_channels=3)


def _example_class():
    """tf.train.Example built from a descriptor, so protobuf itself serializes the reference."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="example_test.proto", package="t")
    lab = descriptor_pb2.FieldDescriptorProto
    opt = lab.LABEL_OPTIONAL
    rep = lab.LABEL_REPEATED

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
        return m

    message("BytesList", [("value", 1, lab.TYPE_BYTES, rep, None)])
    message("FloatList", [("value", 1, lab.TYPE_FLOAT, rep, None)])
    message("Int64List", [("value", 1, lab.TYPE_INT64, rep, None)])
    message(
        "Feature",
        [
            ("bytes_list", 1, lab.TYPE_MESSAGE, opt, ".t.BytesList"),
            ("float_list", 2, lab.TYPE_MESSAGE, opt, ".t.FloatList"),
            ("int64_list", 3, lab.TYPE_MESSAGE, opt, ".t.Int64List"),
        ],
    )
    features = message(
        "Features", [("feature", 1, lab.TYPE_MESSAGE, rep, ".t.Features.FeatureEntry")]
    )
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=lab.TYPE_STRING, label=opt)
    entry.field.add(
        name="value", number=2, type=lab.TYPE_MESSAGE, label=opt, type_name=".t.Feature"
    )
    entry.options.map_entry = True
    message("Example", [("features", 1, lab.TYPE_MESSAGE, opt, ".t.Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Example")), fdp, pool


def test_parse_tf_example_matches_protobuf():
    example_cls, _, _ = _example_class()
    ex = example_cls()
    ex.features.feature["shape"].int64_list.value.extend([3, 1024, 1024])
    ex.features.feature["neg"].int64_list.value.extend([-7, 2**40, 0])
    ex.features.feature["data"].bytes_list.value.extend([b"\x00\xff", b""])
    ex.features.feature["f"].float_list.value.extend([0.5, -2.25])
    ex.features.feature["empty"].int64_list.SetInParent()
    parsed = parse_tf_example(ex.SerializeToString())
    np.testing.assert_array_equal(parsed["shape"], [3, 1024, 1024])
    np.testing.assert_array_equal(parsed["neg"], [-7, 2**40, 0])
    assert parsed["data"] == [b"\x00\xff", b""]
    np.testing.assert_array_equal(parsed["f"], np.array([0.5, -2.25], np.float32))
    assert len(parsed["empty"]) == 0
    # Our encoder's bytes parse back with protobuf's own decoder too.
    ours = tfrecord.encode_tf_example({"shape": [3, 2, 1], "data": b"abcdef"})
    back = example_cls.FromString(ours)
    assert list(back.features.feature["shape"].int64_list.value) == [3, 2, 1]
    assert back.features.feature["data"].bytes_list.value == [b"abcdef"]


def test_parse_tf_example_unpacked_int64():
    # proto2-style writers emit one varint per value instead of a packed run.
    entry = tfrecord._len_field(1, b"shape") + tfrecord._len_field(
        2, tfrecord._len_field(3, b"\x08\x03\x08\x80\x02\x08\x80\x02")
    )
    example = tfrecord._len_field(1, tfrecord._len_field(1, entry))
    np.testing.assert_array_equal(parse_tf_example(example)["shape"], [3, 256, 256])


# ------------------------------------------------------------------------------------------------
# TFDS (mocked, and the error when a set is not prepared).


@pytest.mark.parametrize(
    "dataset,size,channels,expected",
    [("CIFAR10", 32, 3, (32, 32, 3)), ("MNIST", 28, 1, (28, 28, 1)), ("mnist", 32, 3, (32, 32, 3))],
)
def test_tfds_mock(dataset, size, channels, expected):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        s = open_image_source(
            dataset=dataset, split="train", image_size=size, num_channels=channels
        )
        assert len(s) == 6 and s.image_shape == expected and s.num_classes == 10
        images, labels = s.get(np.array([5, 0, 5]))
        assert images.shape == (3, *expected) and images.dtype == np.uint8
        assert labels.dtype == np.int32 and np.all((labels >= 0) & (labels < 10))
        np.testing.assert_array_equal(images[0], images[2])
        raw = tfds.data_source(dataset.lower(), split="train")[0]["image"]
        if size == raw.shape[0]:
            np.testing.assert_array_equal(s.get(np.array([0]))[0][0], raw)


def test_tfds_split_and_name_mapping(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    calls = []

    def fake_data_source(name, *, split, data_dir, download):
        calls.append((name, split, data_dir, download))
        return [{"image": np.zeros((40, 60, 3), np.uint8)}]

    monkeypatch.setattr(tfds, "data_source", fake_data_source)
    s = open_image_source(
        dataset="LSUN",
        split="test",
        image_size=16,
        num_channels=3,
        category="church_outdoor",
        data_dir="/data/tfds",
    )
    assert s.image_shape == (16, 16, 3) and s.num_classes is None
    np.testing.assert_array_equal(s.get(np.array([0]))[1], [-1])
    open_image_source(dataset="svhn", split="test", image_size=32, num_channels=3)
    open_image_source(dataset="CELEBA", split="train", image_size=64, num_channels=3)
    open_image_source(dataset="FashionMNIST", split="test", image_size=28, num_channels=1)
    open_image_source(dataset="my_set/v2", split="train", image_size=8, num_channels=3)
    assert calls == [
        ("lsun/church_outdoor", "validation", "/data/tfds", False),
        ("svhn_cropped", "test", None, False),
        ("celeb_a", "train", None, False),
        ("fashion_mnist", "test", None, False),
        ("my_set/v2", "train", None, False),
    ]
    with pytest.raises(ValueError, match="config.data.category"):
        open_image_source(dataset="lsun", split="train", image_size=16, num_channels=3)


def test_tfds_not_prepared_explains_how(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
    monkeypatch.setattr("socket.socket.connect", no_network)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        open_image_source(
            dataset="CIFAR10", split="train", image_size=32, num_channels=3, data_dir=str(tmp_path)
        )
    assert time.perf_counter() - start < 20
    message = str(info.value)
    assert "tfds build cifar10 --file_format=array_record" in message
    assert "--config.data.data_dir" in message and "--config.data.path" in message
    assert str(tmp_path) in message and "cifar-10-python.tar.gz" in message
    with pytest.raises(ValueError, match="no dataset 'no_such_set_xyz'"):
        open_image_source(
            dataset="no_such_set_xyz",
            split="train",
            image_size=8,
            num_channels=3,
            data_dir=str(tmp_path),
        )


# ------------------------------------------------------------------------------------------------
# Geometry, channels and argument errors.


def test_celeba_crops_center_140_then_resizes():
    image = np.zeros((218, 178, 3), np.uint8)
    # The crop of score_sde: rows 39..178, columns 19..158 of the 218x178 aligned image.
    image[39:179, 19:159] = 200
    out = prepare_image(image, image_size=64, num_channels=3, geometry="celeba")
    assert out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out, 200)
    coords = np.random.default_rng(0).integers(0, 256, (218, 178, 3), dtype=np.uint8)
    out = prepare_image(coords, image_size=140, num_channels=3, geometry="celeba")
    np.testing.assert_array_equal(out, coords[39:179, 19:159])


@pytest.mark.parametrize("shape,size", [((100, 200), 50), ((150, 100), 64), ((33, 47), 64)])
def test_lsun_resizes_smaller_side_then_crops(shape, size):
    h, w = shape
    image = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = prepare_image(image, image_size=size, num_channels=3, geometry="resize_small_crop")
    # Reference computed directly with PIL on the RGB image.
    if h <= w:
        nh, nw = size, round(w * size / h)
    else:
        nh, nw = round(h * size / w), size
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    top, left = (nh - size) // 2, (nw - size) // 2
    np.testing.assert_array_equal(out, resized[top : top + size, left : left + size])


def test_resize_only_when_size_differs_and_exact_errors():
    image = _rgb(1, 32, 32)[0]
    assert prepare_image(image, image_size=32, num_channels=3, geometry="resize") is image
    small = prepare_image(image, image_size=16, num_channels=3, geometry="resize")
    ref = np.asarray(Image.fromarray(image).resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(small, ref)
    with pytest.raises(ValueError, match="image_size=16"):
        prepare_image(image, image_size=16, num_channels=3, geometry="exact")


def test_channel_conversion_and_argument_errors(tmp_path):
    rgb = np.array([[[[255, 0, 0], [10, 200, 30], [255, 255, 255]]]], np.uint8)
    np.testing.assert_array_equal(convert_channels(rgb, 1)[..., 0], [[[76, 124, 255]]])
    with pytest.raises(ValueError, match="num_channels"):
        convert_channels(np.zeros((2, 2, 4), np.uint8), 3)
    npz = tmp_path / "d.npz"
    np.savez(npz, images=_rgb(2, 4, 4))
    kwargs = dict(dataset="x", image_size=4, num_channels=3, path=str(npz))
    with pytest.raises(ValueError, match="split"):
        open_image_source(split="validation", **kwargs)
    with pytest.raises(ValueError, match="unknown data source 'hdf5'"):
        open_image_source(split="train", source="hdf5", **kwargs)
    with pytest.raises(ValueError, match="num_channels must be 1 or 3"):
        open_image_source(split="train", **{**kwargs, "num_channels": 2})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_image_source(split="train", **{**kwargs, "path": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="config.data.path"):
        open_image_source(split="train", dataset="x", image_size=4, num_channels=3, source="npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no supported data"):
        detect_source(tmp_path / "empty")


def test_image_source_from_config():
    _needs(CIFAR_NPZ)
    data = ml_collections.ConfigDict(
        {"dataset": "CIFAR10", "image_size": 16, "num_channels": 3, "path": str(CIFAR_NPZ)}
    )
    s = experiment.image_source_from_config(data, "test")
    assert len(s) == 1017 and s.image_shape == (16, 16, 3)


# ------------------------------------------------------------------------------------------------
# Batching.


def _index_source(n: int, size: int = 2) -> ArraySource:
    """Example i is an image filled with the value i, so batches reveal which examples they hold."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, size, size, 1))
    return ArraySource("index", np.ascontiguousarray(images), np.arange(n, dtype=np.int32), None)


def _ids(batch: np.ndarray) -> np.ndarray:
    return np.rint(batch[:, 0, 0, 0] * 255).astype(int)


def test_to_model_space_ranges():
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    x = to_model_space(images, centered=False)
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1
    y = to_model_space(images, centered=True)
    assert y.min() == -1 and y.max() == 1
    u = np.random.default_rng(0).random(images.shape, dtype=np.float32)
    u.flat[0], u.flat[-1] = 0.0, np.nextafter(np.float32(1), np.float32(0))
    z = to_model_space(images, centered=False, dequantize_noise=u)
    k = images.astype(np.float64)
    assert np.all(z >= k / 256) and np.all(z < (k + 1) / 256)
    zc = to_model_space(images, centered=True, dequantize_noise=u)
    assert np.all(zc >= 2 * k / 256 - 1) and np.all(zc < 2 * (k + 1) / 256 - 1)
    # Every pixel value with noise just below 1: float32 rounding must not reach the bin's edge.
    top = np.full(images.shape, np.nextafter(np.float32(1), np.float32(0)))
    for centered in (False, True):
        z = to_model_space(images, centered=centered, dequantize_noise=top).astype(np.float64)
        edge = (k + 1) / 256
        assert np.all(z < (2 * edge - 1 if centered else edge))


def test_train_batch_deterministic_and_flips():
    s = ArraySource("rgb", _rgb(50, 4, 6), np.zeros(50, np.int32), None)
    kw = dict(
        global_batch_size=8, seed=3, random_flip=True, centered=True, uniform_dequantization=True
    )
    a = train_batch(s, 5, **kw)
    np.testing.assert_array_equal(a, train_batch(s, 5, **kw))
    assert a.shape == (8, 4, 6, 3) and a.dtype == np.float32
    assert not np.array_equal(a, train_batch(s, 6, **kw))
    assert not np.array_equal(a, train_batch(s, 5, **{**kw, "seed": 4}))
    plain = dict(kw, random_flip=True, uniform_dequantization=False, centered=False)
    flipped = train_batch(s, 5, **plain)
    idx = train_example_indices(50, 5, global_batch_size=8, seed=3)
    originals = s.images[idx] / np.float32(255)
    same = np.all(flipped == originals, axis=(1, 2, 3))
    mirrored = np.all(flipped == originals[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and same.any() and mirrored.any()


def _patterned(n: int, h: int, w: int, c: int) -> np.ndarray:
    """uint8 images no flip, transpose or channel swap leaves unchanged."""
    i, y, x, ch = np.ogrid[:n, :h, :w, :c]
    return ((i * 37 + y * 11 + x * 5 + ch * 3 + y * x) % 256).astype(np.uint8)


# The first 20 hex digits of the sha256 of the batches below, as the pipeline produced them before
# it was rewritten for speed: every later version must give the same batches bit for bit.
RECORDED_BATCH_DIGESTS = {
    (False, False, False): "108614afe9b1e2c83f2c",
    (False, False, True): "d1e3336ecf26b48a42f6",
    (False, True, False): "25de6e99006c420fb1ba",
    (False, True, True): "24f3aaf49c6cc7984202",
    (True, False, False): "739b4be06089a4cea64f",
    (True, False, True): "7a19c1276e623823d6e3",
    (True, True, False): "3953ffd7257b64280a91",
    (True, True, True): "5b846ff0271dc1055b2d",
}


@pytest.mark.parametrize("options", sorted(RECORDED_BATCH_DIGESTS))
def test_train_batches_are_the_recorded_ones(options):
    random_flip, centered, uniform_dequantization = options
    sources = [
        ArraySource("rgb", _patterned(23, 6, 8, 3), np.arange(23, dtype=np.int32) % 5, 5),
        ArraySource("gray", _patterned(23, 7, 5, 1), np.arange(23, dtype=np.int32), None),
    ]
    digest = hashlib.sha256()
    for s, process_count in itertools.product(sources, (1, 2)):
        for process_index, step in itertools.product(range(process_count), (0, 5, 13)):
            x, y = train_batch(
                s,
                step,
                global_batch_size=8,
                seed=4,
                random_flip=random_flip,
                centered=centered,
                uniform_dequantization=uniform_dequantization,
                process_index=process_index,
                process_count=process_count,
                return_labels=True,
            )
            digest.update(x.tobytes())
            digest.update(y.tobytes())
    assert digest.hexdigest()[:20] == RECORDED_BATCH_DIGESTS[options]


def test_to_model_space_keeps_its_arithmetic():
    # The float32 operations of the original formula, in its order, for any input dtype or shape.
    rgb = _patterned(3, 4, 5, 3)
    noise = np.random.default_rng(0).random(rgb.size)  # float64, cast, then clipped
    noise[0] = 1.0
    for images in (rgb, rgb.astype(np.int64), rgb + 0.3, rgb[0, 0], rgb[0, 0, 0, 0]):
        x = np.asarray(images).astype(np.float32)
        u = noise[: x.size].reshape(x.shape)
        clipped = np.clip(u.astype(np.float32), 0, 1 - 2**-16)
        for centered in (False, True):
            expected = [x / np.float32(255), (x + clipped) / np.float32(256)]
            expected = [2.0 * e - 1.0 if centered else e for e in expected]
            got = [
                to_model_space(images, centered=centered),
                to_model_space(images, centered=centered, dequantize_noise=u),
            ]
            for g, e in zip(got, expected, strict=True):
                assert g.dtype == np.float32 and g.shape == x.shape
                np.testing.assert_array_equal(g, e)


def test_train_epochs_visit_every_example_once():
    n, g = 10, 4
    s = _index_source(n)
    kw = dict(global_batch_size=g, seed=7, random_flip=False, centered=False)
    stream = np.concatenate(
        [_ids(train_batch(s, step, uniform_dequantization=False, **kw)) for step in range(10)]
    )
    epochs = stream.reshape(4, n)  # 40 positions = 4 epochs
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
    assert len({tuple(e) for e in epochs}) == 4  # a new order every epoch
    np.testing.assert_array_equal(epochs[1], np.random.default_rng([7, 1]).permutation(n))


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shards_concatenate_to_global_batch(process_count):
    s = _index_source(37)
    kw = dict(
        global_batch_size=8, seed=1, random_flip=False, centered=False, uniform_dequantization=False
    )
    for step in [0, 4, 9]:
        full = train_batch(s, step, **kw)
        parts = [
            train_batch(s, step, process_index=i, process_count=process_count, **kw)
            for i in range(process_count)
        ]
        assert parts[0].shape[0] == 8 // process_count
        np.testing.assert_array_equal(np.concatenate(parts), full)
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        train_batch(s, 0, process_count=3, **kw)


def test_eval_batches_cover_split_once_with_mask():
    n, g = 10, 4
    s = _index_source(n)
    assert num_eval_batches(s, global_batch_size=g) == 3
    assert num_eval_batches(s, global_batch_size=g, process_index=1, process_count=2) == 3
    batches = list(eval_batches(s, global_batch_size=g))
    assert len(batches) == 3
    for images, labels, mask in batches:
        assert images.shape == (4, 2, 2, 1) and labels.shape == mask.shape == (4,)
    labels = np.concatenate([b[1] for b in batches])
    mask = np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(labels[mask], np.arange(n))
    np.testing.assert_array_equal(mask, [True] * 10 + [False] * 2)
    np.testing.assert_array_equal(labels[~mask], [9, 9])  # padding repeats the last example

    seen = []
    for process in range(2):
        out = list(eval_batches(s, global_batch_size=g, process_index=process, process_count=2))
        assert len(out) == 3 and all(b[0].shape[0] == 2 for b in out)
        seen.append(out)
    # Interleaving the two halves of every global batch restores the single-process stream.
    merged = np.concatenate([np.concatenate([a[1], b[1]]) for a, b in zip(*seen, strict=True)])
    merged_mask = np.concatenate([np.concatenate([a[2], b[2]]) for a, b in zip(*seen, strict=True)])
    np.testing.assert_array_equal(merged, labels)
    np.testing.assert_array_equal(merged_mask, mask)
    # A process may hold only padding in the last batch; it still yields it (masked).
    assert not seen[1][-1][2].any()

    few = list(eval_batches(s, global_batch_size=g, max_examples=5))
    assert len(few) == 2 == num_eval_batches(s, global_batch_size=g, max_examples=5)
    np.testing.assert_array_equal(
        np.concatenate([b[1] for b in few])[np.concatenate([b[2] for b in few])], np.arange(5)
    )


@pytest.mark.parametrize("workers", [1, 3])
def test_train_iterator_matches_train_batch(workers):
    s = _index_source(23)
    kw = dict(
        global_batch_size=4, seed=2, random_flip=True, centered=True, uniform_dequantization=True
    )
    with TrainIterator(s, start_step=5, steps_per_call=3, prefetch=2, workers=workers, **kw) as it:
        assert len(it._threads) == workers
        for expected_step in [5, 8, 11, 14, 17]:
            step, chunk = next(it)
            assert step == expected_step and chunk.shape == (3, 4, 2, 2, 1)
            for k in range(3):
                np.testing.assert_array_equal(chunk[k], train_batch(s, step + k, **kw))
    with pytest.raises(StopIteration):
        next(it)


def test_train_batch_into_out_and_iterator_refuses_out_and_labels():
    s = _index_source(23)
    kw = dict(
        global_batch_size=4, seed=2, random_flip=True, centered=False, uniform_dequantization=False
    )
    out = np.full((4, 2, 2, 1), np.nan, np.float32)
    assert train_batch(s, 3, out=out, **kw) is out
    np.testing.assert_array_equal(out, train_batch(s, 3, **kw))
    with pytest.raises(ValueError, match="does not match"):
        train_batch(s, 3, out=np.empty((3, 2, 2, 1), np.float32), **kw)
    for extra in (dict(return_labels=True), dict(out=out)):
        with pytest.raises(ValueError, match="images only"):
            TrainIterator(s, start_step=0, **kw, **extra)


class _FailingSource:
    name = "failing"
    image_shape = (2, 2, 1)
    num_classes = None

    def __len__(self):
        return 10

    def get(self, indices):
        raise RuntimeError("disk on fire")


@pytest.mark.parametrize("workers", [1, 2])
def test_train_iterator_reraises_worker_errors(workers):
    it = TrainIterator(
        _FailingSource(),
        start_step=0,
        workers=workers,
        global_batch_size=2,
        seed=0,
        random_flip=False,
        centered=False,
        uniform_dequantization=False,
    )
    with pytest.raises(RuntimeError, match="disk on fire"):
        next(it)
    it.close()
    assert not any(t.is_alive() for t in it._threads)


def test_input_workers_from_the_config():
    from scoresde_jax.errors import ConfigError
    from scoresde_jax.run.trainer import input_workers

    assert input_workers(ml_collections.ConfigDict({"num_workers": 3})) == 3
    automatic = input_workers(ml_collections.ConfigDict({"num_workers": None}))
    assert 1 <= automatic <= min(4, os.cpu_count())
    for bad in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="num_workers"):
            input_workers(ml_collections.ConfigDict({"num_workers": bad}))


@pytest.mark.parametrize("batch_axis", [0, 1])
def test_to_global_array_on_fake_devices(batch_axis):
    mesh = sharding.make_data_mesh()
    n = mesh.shape["data"]
    shape = (2 * n, 3) if batch_axis == 0 else (3, 2 * n, 2)
    local = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    x = to_global_array(local, mesh, batch_axis=batch_axis)
    assert isinstance(x, jax.Array) and x.shape == local.shape
    np.testing.assert_array_equal(np.asarray(x), local)
    assert x.sharding.spec == PartitionSpec(*([None] * batch_axis), "data")
    assert len(x.addressable_shards) == n
    assert x.addressable_shards[0].data.shape[batch_axis] == 2


def test_conversions_are_logged_and_foreign_data_refused(tmp_path, caplog):
    import logging

    rgb = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "rgb.npz"
    np.savez(path, train_images=rgb)
    with caplog.at_level(logging.INFO, logger="scoresde_jax.data.formats.base"):
        source = open_image_source(
            dataset="my_images", split="train", image_size=28, num_channels=1, path=str(path)
        )
    assert source.image_shape == (28, 28, 1)
    assert "images of 32x32x3 are converted to 28x28x1" in caplog.text
    # Datasets of other names: the smaller side resized, then a center crop.
    assert "RGB -> gray (ITU-R 601 luma); smaller side resized, center crop 32x32 -> 28x28" in (
        caplog.text
    )
    # The same file named as MNIST is another dataset, not something to convert.
    with pytest.raises(ValueError, match="32x32x3 images, but MNIST images are 28x28x1"):
        open_image_source(
            dataset="MNIST", split="train", image_size=28, num_channels=1, path=str(path)
        )
    caplog.clear()
    gray = rgb[..., :1]
    np.savez(path, train_images=gray)
    with caplog.at_level(logging.INFO, logger="scoresde_jax.data.formats.base"):
        open_image_source(
            dataset="my_images", split="train", image_size=32, num_channels=1, path=str(path)
        )
    assert "converted" not in caplog.text  # nothing to do, nothing said
