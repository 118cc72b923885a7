"""Random-access image sources: every supported format -> uint8 ``[n, H, W, C]`` at model size.

A source is anything with ``len(source)``, ``source.get(indices) -> (images, labels)`` and the
attributes ``name``, ``image_shape`` (H, W, C) and ``num_classes`` (see :class:`ImageSource`).
Images come out already cropped/resized to ``image_size`` and converted to ``num_channels``, so
the batching code in :mod:`scoresde_jax.data.pipeline` never looks at formats.

Formats (none needs TensorFlow):

============== ====================================================================== =========
source         what ``path`` points at                                                 loading
============== ====================================================================== =========
npz            ``.npz`` with ``{split}_images`` (uint8 NHWC) [+ ``{split}_labels``],   in memory
               or ``images`` [+ ``labels``] for a single-split file
mnist_idx      folder with ``train-images-idx3-ubyte[.gz]``, ``t10k-...`` (MNIST and   in memory
               Fashion-MNIST)
cifar10_python ``cifar-10-python.tar.gz`` or its ``cifar-10-batches-py/`` folder       in memory
folder         folder of png/jpg/jpeg/webp/bmp files (recursive); labels from class    lazy
               sub-folders when every image sits in one
tfrecord       ``*.tfrecords`` file, folder or glob in the StyleGAN layout (FFHQ,      lazy
               CelebA-HQ): ``shape`` = [C, H, W], ``data`` = raw CHW uint8
tfds           a TFDS dataset prepared in ``array_record`` format (random access)      lazy
============== ====================================================================== =========

In-memory sources are resized once when opened; lazy ones decode and resize on every ``get``.
Geometry follows the paper's input pipelines (see :data:`DATASETS`): CIFAR-10, SVHN and MNIST are
resized only when ``image_size`` differs from the native size, CelebA is center-cropped to
140x140 and then resized, LSUN and image folders get the smaller side resized to ``image_size``
and a center crop, and FFHQ / CelebA-HQ records must already have ``image_size`` pixels.
An image that already is ``image_size x image_size`` is always taken as it is.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import gzip
import io
import logging
import math
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from scoresde_jax.errors import DataError, MissingDataError, UserError

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "GEOMETRIES",
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "ArraySource",
    "DatasetSpec",
    "ImageSource",
    "LazySource",
    "TFRecordIndex",
    "convert_channels",
    "dataset_spec",
    "detect_source",
    "index_tfrecords",
    "open_image_source",
    "parse_tf_example",
    "prepare_image",
    "read_idx",
    "read_record",
    "write_tfrecord_images",
]

SPLITS = ("train", "test")
SOURCES = ("tfds", "npz", "mnist_idx", "cifar10_python", "folder", "tfrecord")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_LOCAL_FORMATS_HELP = (
    "local formats (read without TensorFlow): an .npz with train_images/test_images arrays, "
    "a folder of MNIST/Fashion-MNIST IDX files, the CIFAR-10 python archive "
    "(cifar-10-python.tar.gz or cifar-10-batches-py/), a folder of images, or TFRecord files "
    "(*.tfrecords, the FFHQ/CelebA-HQ layout)"
)


# ---------------------------------------------------------------------------------------------
# Sources.


@runtime_checkable
class ImageSource(Protocol):
    """What the batching code needs from a dataset split.

    Attributes:
        name: a human-readable description (dataset, split and where it is read from).
        image_shape: ``(H, W, C)`` of every image ``get`` returns.
        num_classes: number of labels, or ``None`` when the source has none.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int | None

    def __len__(self) -> int: ...

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(images uint8 [n, H, W, C], labels int32 [n])`` of the examples ``indices``;
        a label is -1 where unknown."""
        ...


def _check_indices(indices: np.ndarray, n: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(f"indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"indices must lie in [0, {n}), got [{idx.min()}, {idx.max()}]")
    return idx


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
    """A split held in memory, already at the model's size.

    Attributes:
        name: description of the split.
        images: uint8 ``[N, H, W, C]``.
        labels: int32 ``[N]`` (-1 where unknown).
        num_classes: number of labels, or ``None``.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int | None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = _check_indices(indices, len(self))
        return self.images[idx], self.labels[idx]


@dataclasses.dataclass(frozen=True, eq=False)
class LazySource:
    """A split decoded one example at a time: ``read(i) -> (raw image uint8 HWC, label)`` then
    ``fit(raw) -> image`` of shape ``image_shape`` (crop, resize, channels).

    Attributes:
        name: description of the split.
        length: number of examples.
        read: decodes example ``i``; must be safe to call from a prefetching thread.
        fit: brings a decoded image to ``image_shape``.
        image_shape: ``(H, W, C)`` of the images ``get`` returns.
        num_classes: number of labels, or ``None``.
    """

    name: str
    length: int
    read: Callable[[int], tuple[np.ndarray, int]]
    fit: Callable[[np.ndarray], np.ndarray]
    image_shape: tuple[int, int, int]
    num_classes: int | None

    def __len__(self) -> int:
        return self.length

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = _check_indices(indices, len(self))
        images = np.empty((len(idx), *self.image_shape), np.uint8)
        labels = np.empty(len(idx), np.int32)
        for k, i in enumerate(idx.tolist()):
            raw, labels[k] = self.read(i)
            image = self.fit(raw)
            if image.shape != self.image_shape:
                raise DataError(
                    f"{self.name}: example {i} has shape {image.shape} after preprocessing, "
                    f"expected {self.image_shape}"
                )
            images[k] = image
        return images, labels


@dataclasses.dataclass(frozen=True, eq=False)
class TintedSource:
    """Grayscale images multiplied by one saturated color per example (dataset ``colored_mnist``).

    Example ``i`` of a split gets the hue ``frac(i * phi + offset)`` (``phi`` the golden ratio
    conjugate, ``offset`` fixed per split) at full saturation and value, so colors are
    deterministic, spread evenly over the hue circle, and independent of the digit. The gray
    pixel ``g`` becomes ``round(g * rgb)``.

    Attributes:
        base: the one-channel source.
        split: ``"train"`` or ``"test"`` (picks the hue offset).
    """

    base: ImageSource
    split: str

    def __post_init__(self):
        if self.base.image_shape[-1] != 1:
            raise DataError(f"TintedSource needs one-channel images, got {self.base.image_shape}")

    @property
    def name(self) -> str:
        return f"{self.base.name}, tinted"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.base.image_shape[:2], 3)

    @property
    def num_classes(self) -> int | None:
        return self.base.num_classes

    def __len__(self) -> int:
        return len(self.base)

    def colors(self, indices: np.ndarray) -> np.ndarray:
        """The float RGB colors ``[n, 3]`` in ``[0, 1]`` of examples ``indices``."""
        offset = 0.0 if self.split == "train" else 0.5
        hue = np.mod(np.asarray(indices, np.float64) * 0.6180339887498949 + offset, 1.0)
        # HSV -> RGB at S = V = 1: each channel is a clipped triangle wave of the hue.
        k = np.mod(np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6.0, 6.0)
        return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gray, labels = self.base.get(indices)
        rgb = self.colors(np.asarray(indices))
        tinted = gray.astype(np.float64) * rgb[:, None, None, :]
        return np.rint(tinted).astype(np.uint8), labels


# ---------------------------------------------------------------------------------------------
# Geometry and channels.


def convert_channels(images: np.ndarray, num_channels: int) -> np.ndarray:
    """Converts the last axis of uint8 images to ``num_channels``.

    Grayscale -> RGB repeats the channel; RGB -> grayscale is the ITU-R 601 luma
    ``0.299 R + 0.587 G + 0.114 B`` (what PIL's ``convert("L")`` computes), rounded.
    """
    c = images.shape[-1]
    if c == num_channels:
        return images
    if c == 1 and num_channels == 3:
        return np.repeat(images, 3, axis=-1)
    if c == 3 and num_channels == 1:
        # Integer arithmetic keeps the weights exact and avoids a float copy of a whole dataset.
        x = images.astype(np.uint32)
        luma = (299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2] + 500) // 1000
        return luma.astype(np.uint8)[..., None]
    raise DataError(
        f"cannot convert images with {c} channels to {num_channels}; supported are 1 -> 3 "
        "(repeat) and 3 -> 1 (luma); set config.data.num_channels to 1 or 3"
    )


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a uint8 ``[H, W, C]`` image. PIL widens the filter when shrinking, so
    downsampling is antialiased like the paper's ``tf.image.resize(..., antialias=True)``."""
    if image.shape[:2] == (height, width):
        return image
    # One 8-bit plane at a time works for any channel count with identical results to RGB mode.
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(planes, axis=-1)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` window (offsets rounded down, as in score_sde)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise DataError(f"cannot center-crop {size}x{size} from an image of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def resize_small(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes so the smaller side is ``size``, keeping the aspect ratio."""
    h, w = image.shape[:2]
    if h <= w:
        return resize(image, size, max(size, round(w * size / h)))
    return resize(image, max(size, round(h * size / w)), size)


def _fit_resize(image: np.ndarray, size: int) -> np.ndarray:
    return resize(image, size, size)


def _fit_celeba(image: np.ndarray, size: int) -> np.ndarray:
    # score_sde's CelebA: the central 140x140 face region of the 178x218 aligned images.
    return resize(center_crop(image, 140), size, size)


def _fit_resize_small_crop(image: np.ndarray, size: int) -> np.ndarray:
    return center_crop(resize_small(image, size), size)


def _fit_exact(image: np.ndarray, size: int) -> np.ndarray:
    raise DataError(
        f"image is {image.shape[0]}x{image.shape[1]} but config.data.image_size={size}; this "
        "dataset is not resized: use the files of that resolution (e.g. ffhq-r08.tfrecords for "
        "256) or set image_size to the resolution of the data"
    )


# How each dataset is brought to image_size x image_size (an image of that size passes as is).
GEOMETRIES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "resize": _fit_resize,
    "celeba": _fit_celeba,
    "resize_small_crop": _fit_resize_small_crop,
    "exact": _fit_exact,
}


def prepare_image(
    image: np.ndarray, *, image_size: int, num_channels: int, geometry: str
) -> np.ndarray:
    """One uint8 image ``[H, W]`` or ``[H, W, C]`` -> ``[image_size, image_size, num_channels]``.

    Channels are converted first (fewer planes to resize when going to grayscale), then the
    ``geometry`` of :data:`GEOMETRIES` applies unless the image is already of the target size.
    """
    if image.ndim == 2:
        image = image[..., None]
    image = convert_channels(image, num_channels)
    if image.shape[:2] == (image_size, image_size):
        return image
    return GEOMETRIES[geometry](image, image_size)


def _prepare_array(
    images: np.ndarray, *, image_size: int, num_channels: int, geometry: str
) -> np.ndarray:
    images = convert_channels(images, num_channels)
    if images.shape[1:3] == (image_size, image_size):
        return images
    out = np.empty((len(images), image_size, image_size, num_channels), np.uint8)
    for i, image in enumerate(images):
        out[i] = GEOMETRIES[geometry](image, image_size)
    return out


# ---------------------------------------------------------------------------------------------
# Dataset names (those of the score_sde configs).


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How a named dataset is found and shaped.

    Attributes:
        tfds_name: the TFDS name (``{category}`` is filled from ``config.data.category``), or
            ``None`` for sets that exist only as TFRecords (FFHQ, CelebA-HQ).
        geometry: a key of :data:`GEOMETRIES`.
        test_split: the TFDS split that serves ``split="test"``.
        num_classes: number of labels when the dataset is labelled.
        tinted: grayscale images are colored by :class:`TintedSource` (a colorization
            benchmark made from a grayscale dataset).
        native_shape: ``(H, W, C)`` of every image of the dataset where that is fixed; data of
            another shape under this name is refused (a wrong file, not something to resize).
    """

    tfds_name: str | None
    geometry: str
    test_split: str = "test"
    num_classes: int | None = None
    tinted: bool = False
    native_shape: tuple[int, int, int] | None = None


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("cifar10", "resize", num_classes=10, native_shape=(32, 32, 3)),
    "svhn": DatasetSpec("svhn_cropped", "resize", num_classes=10, native_shape=(32, 32, 3)),
    "mnist": DatasetSpec("mnist", "resize", num_classes=10, native_shape=(28, 28, 1)),
    # MNIST digits, each in its own saturated color: data on which colorization means something.
    "coloredmnist": DatasetSpec("mnist", "resize", num_classes=10, tinted=True),
    "fashionmnist": DatasetSpec(
        "fashion_mnist", "resize", num_classes=10, native_shape=(28, 28, 1)
    ),
    "celeba": DatasetSpec("celeb_a", "celeba"),
    # TFDS's LSUN has no test split; its validation split is the held-out set.
    "lsun": DatasetSpec("lsun/{category}", "resize_small_crop", test_split="validation"),
    "ffhq": DatasetSpec(None, "exact"),
    "celebahq": DatasetSpec(None, "exact"),
}


def dataset_spec(dataset: str) -> DatasetSpec:
    """The :data:`DATASETS` entry of ``dataset`` (case, ``-`` and ``_`` ignored); any other name is
    taken as a TFDS name as it is, with the smaller-side-resize-and-crop geometry."""
    key = dataset.lower().replace("-", "").replace("_", "")
    return DATASETS.get(key, DatasetSpec(dataset, "resize_small_crop"))


def _lazy_source(
    name: str,
    length: int,
    read: Callable[[int], tuple[np.ndarray, int]],
    *,
    spec: DatasetSpec,
    image_size: int,
    num_channels: int,
    num_classes: int | None,
    check_native_shape: bool = True,
) -> LazySource:
    """A :class:`LazySource` whose images are fitted with the dataset's geometry.

    ``check_native_shape``: refuse local files whose images do not have the dataset's shape
    (TFDS serves a dataset by its name, so there the check is moot).
    """
    if length:
        first = np.asarray(read(0)[0])
        first = first[..., None] if first.ndim == 2 else first
        if check_native_shape:
            _check_native_shape(first.shape, spec, name, name.split("/", 1)[0])
        _log_conversion(
            f"{name} (its first image)",
            first.shape,
            image_size=image_size,
            num_channels=num_channels,
            geometry=spec.geometry,
        )
    return LazySource(
        name=name,
        length=length,
        read=read,
        fit=functools.partial(
            prepare_image, image_size=image_size, num_channels=num_channels, geometry=spec.geometry
        ),
        image_shape=(image_size, image_size, num_channels),
        num_classes=num_classes,
    )


# ---------------------------------------------------------------------------------------------
# Readers of in-memory formats.


def _as_nhwc_uint8(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8 (0..255), got {images.dtype}")
    if images.ndim == 3:  # [N, H, W] grayscale
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(
            f"{where}: images must be [N, H, W, C] with C = 1 or 3 (channels last), "
            f"got shape {images.shape}"
        )
    return images


def _as_labels(labels: np.ndarray | None, n: int, where: str) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, np.int32)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != n:
        raise DataError(f"{where}: {len(labels)} labels for {n} images")
    return labels.astype(np.int32)


def _shape_text(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


def describe_conversion(
    native_shape, *, image_size: int, num_channels: int, geometry: str
) -> str | None:
    """What :func:`prepare_image` does to an image of ``native_shape`` (``None``: nothing)."""
    h, w, c = native_shape
    steps = []
    if c != num_channels:
        steps.append("RGB -> gray (ITU-R 601 luma)" if c == 3 else "gray -> RGB (channel repeated)")
    if (h, w) != (image_size, image_size):
        rule = {
            "resize": "bilinear resize",
            "celeba": "center crop 140x140, bilinear resize",
            "resize_small_crop": "smaller side resized, center crop",
            "exact": "refused (this dataset is never resized)",
        }[geometry]
        steps.append(f"{rule} {h}x{w} -> {image_size}x{image_size}")
    return "; ".join(steps) or None


def _check_native_shape(native_shape, spec: DatasetSpec, where: str, dataset: str) -> None:
    if spec.native_shape is None or tuple(native_shape) == spec.native_shape:
        return
    raise DataError(
        f"{where} holds {_shape_text(native_shape)} images, but {dataset} images are "
        f"{_shape_text(spec.native_shape)}: this looks like another dataset. Point "
        f"--config.data.path at the {dataset} files, or, to train on these images anyway "
        "(converted to the config's image_size and num_channels), name them with another "
        "--config.data.dataset (any name but the known ones, e.g. custom)."
    )


def _log_conversion(name: str, native_shape, **kwargs) -> None:
    what = describe_conversion(native_shape, **kwargs)
    if what:
        log.info(
            "Data %s: images of %s are converted to %dx%dx%d: %s",
            name,
            _shape_text(native_shape),
            kwargs["image_size"],
            kwargs["image_size"],
            kwargs["num_channels"],
            what,
        )


def _array_source(
    name: str,
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    where: str,
    spec: DatasetSpec,
    image_size: int,
    num_channels: int,
) -> ArraySource:
    images = _as_nhwc_uint8(images, where)
    dataset = name.split("/", 1)[0]
    _check_native_shape(images.shape[1:], spec, where, dataset)
    _log_conversion(
        name,
        images.shape[1:],
        image_size=image_size,
        num_channels=num_channels,
        geometry=spec.geometry,
    )
    labels = _as_labels(labels, len(images), where)
    num_classes = None
    if labels.size and labels.min() >= 0:
        num_classes = spec.num_classes or int(labels.max()) + 1
    images = _prepare_array(
        images, image_size=image_size, num_channels=num_channels, geometry=spec.geometry
    )
    return ArraySource(name=name, images=images, labels=labels, num_classes=num_classes)


def _open_npz(
    path: Path,
    *,
    split: str,
    name: str,
    spec: DatasetSpec,
    image_size: int,
    num_channels: int,
) -> ArraySource:
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if f"{split}_images" in keys:
            image_key, label_key = f"{split}_images", f"{split}_labels"
        elif "images" in keys:
            # A single-split file serves whichever split is asked for.
            image_key, label_key = "images", "labels"
        else:
            raise DataError(
                f"{path} has no array '{split}_images' (it has {sorted(keys)}); save one with "
                f"np.savez(path, {split}_images=uint8_nhwc, {split}_labels=int_labels), or "
                "'images'/'labels' for a single-split file"
            )
        images = f[image_key]
        labels = f[label_key] if label_key in keys else None
    return _array_source(
        name,
        images,
        labels,
        where=f"{path}[{image_key}]",
        spec=spec,
        image_size=image_size,
        num_channels=num_channels,
    )


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzip-compressed or not.

    Layout: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions ``d``, then
    ``d`` big-endian uint32 sizes and the data in row-major order.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(
                f"{path} is a damaged or truncated gzip file ({type(e).__name__}: {e}); "
                "download it again (see the README, Data)."
            ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (magic bytes {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header says {dims} x {dtype.itemsize} bytes = {expected} bytes of data, "
            f"file holds {len(raw) - header}: the file is truncated or damaged; download it again"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _idx_file(folder: Path, split: str, kind: str, ndim: int) -> Path | None:
    prefix = _IDX_PREFIX[split]
    for sep in ("-", "."):  # "train-images-idx3-ubyte" and the "train-images.idx3-ubyte" mirrors
        for suffix in ("", ".gz"):
            candidate = folder / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _is_idx_folder(folder: Path) -> bool:
    return any(_idx_file(folder, split, "images", 3) for split in SPLITS)


def _open_mnist_idx(
    path: Path,
    *,
    split: str,
    name: str,
    spec: DatasetSpec,
    image_size: int,
    num_channels: int,
) -> ArraySource:
    image_file = _idx_file(path, split, "images", 3)
    label_file = _idx_file(path, split, "labels", 1)
    if image_file is None or label_file is None:
        prefix = _IDX_PREFIX[split]
        raise MissingDataError(
            f"{path} lacks the {split} split: expected {prefix}-images-idx3-ubyte[.gz] and "
            f"{prefix}-labels-idx1-ubyte[.gz] (the files of the MNIST / Fashion-MNIST download)"
        )
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{image_file}: expected uint8 [N, H, W], got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_file}: expected {len(images)} labels, got shape {labels.shape}")
    return _array_source(
        name,
        images,
        labels,
        where=str(image_file),
        spec=spec,
        image_size=image_size,
        num_channels=num_channels,
    )


_CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CIFAR_DIR = "cifar-10-batches-py"


class UnsafePickleError(DataError, pickle.UnpicklingError):
    """A pickled CIFAR-10 batch asks for code to run: it is not a CIFAR-10 file."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays, lists and dicts: a CIFAR batch needs nothing else, and a
    tampered archive then cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{module}.{name} is not allowed in a CIFAR-10 batch file: this file is not one of "
            "the CIFAR-10 python batches and is not read"
        )


def _cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{where} is not a CIFAR-10 batch (no b'data' / b'labels')")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: expected uint8 [N, 3072] rows, got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise DataError(f"{where}: {labels.shape} labels for {len(data)} images")
    # Each row is the red plane, then green, then blue (CHW).
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar_location(path: Path) -> Path | None:
    """The archive or batch folder that ``path`` is or directly contains, else ``None``."""
    if path.is_file():
        return path if tarfile.is_tarfile(path) else None
    for folder in (path, path / _CIFAR_DIR):
        if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
            return folder
    archive = path / "cifar-10-python.tar.gz"
    return archive if archive.is_file() else None


def _open_cifar10_python(
    path: Path,
    *,
    split: str,
    name: str,
    spec: DatasetSpec,
    image_size: int,
    num_channels: int,
) -> ArraySource:
    location = _cifar_location(path)
    if location is None:
        raise MissingDataError(
            f"{path} is neither cifar-10-python.tar.gz nor a folder holding {_CIFAR_DIR}/ "
            "(data_batch_1..5, test_batch)"
        )
    parts = []
    if location.is_file():
        with tarfile.open(location, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for batch in _CIFAR_BATCHES[split]:
                if batch not in members:
                    raise MissingDataError(f"{location} has no member {_CIFAR_DIR}/{batch}")
                raw = tar.extractfile(members[batch]).read()
                parts.append(_cifar_batch(raw, f"{location}:{batch}"))
    else:
        for batch in _CIFAR_BATCHES[split]:
            file = location / batch
            if not file.is_file():
                raise MissingDataError(f"{location} has no {batch} (needed for the {split} split)")
            parts.append(_cifar_batch(file.read_bytes(), str(file)))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _array_source(
        name,
        images,
        labels,
        where=str(location),
        spec=spec,
        image_size=image_size,
        num_channels=num_channels,
    )


# ---------------------------------------------------------------------------------------------
# Lazy readers: image folders, TFRecords, TFDS.


def _split_folder(path: Path, split: str) -> Path:
    """``path/<split>`` when the folder is split into train/ and test/, else ``path``."""
    if (path / split).is_dir():
        return path / split
    present = [s for s in SPLITS if (path / s).is_dir()]
    if present:
        raise MissingDataError(
            f"{path} is split into {present} but has no '{split}' sub-folder; add it or point "
            "--config.data.path at a folder that holds the images directly"
        )
    return path


def _image_files(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _decode_image_file(path: Path, label: int) -> tuple[np.ndarray, int]:
    with Image.open(path) as im:
        # Grayscale stays one channel (convert_channels widens it when asked); all else is RGB.
        im = im.convert("L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
        return np.asarray(im), label


def _open_folder(
    path: Path, *, split: str, name: str, spec: DatasetSpec, image_size: int, num_channels: int
) -> LazySource:
    root = _split_folder(path, split)
    files = _image_files(root)
    if not files:
        raise MissingDataError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    classes_of = [p.relative_to(root).parts for p in files]
    num_classes = None
    labels = [-1] * len(files)
    if all(len(parts) == 2 for parts in classes_of):
        classes = sorted({parts[0] for parts in classes_of})
        lookup = {c: i for i, c in enumerate(classes)}
        labels = [lookup[parts[0]] for parts in classes_of]
        num_classes = len(classes)
    return _lazy_source(
        name,
        len(files),
        lambda i: _decode_image_file(files[i], labels[i]),
        spec=spec,
        image_size=image_size,
        num_channels=num_channels,
        num_classes=num_classes,
    )


from scoresde_jax.io.tfrecord import (  # noqa: E402
    _HEADER,
    TFRecordIndex,
    index_tfrecords,
    parse_tf_example,
    read_record,
    write_tfrecord_images,
)


def _tfrecord_files(path: Path, split: str) -> list[Path]:
    text = os.fspath(path)
    if any(ch in text for ch in "*?["):
        return [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
    if path.is_dir():
        folder = _split_folder(path, split)
        return sorted(p for p in folder.iterdir() if p.is_file() and _is_tfrecord_name(p))
    return [path] if path.is_file() else []


def _is_tfrecord_name(path: Path) -> bool:
    return path.name.endswith((".tfrecords", ".tfrecord"))


def _first_record(path: Path) -> bytes:
    with open(path, "rb") as f:
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise DataError(f"{path} is empty or not a TFRecord file")
        (length, _) = _HEADER.unpack(header)
        data = f.read(length)
    if len(data) != length:
        raise DataError(f"{path}: first record is truncated (not a TFRecord file?)")
    return data


def _decode_image_example(record: bytes, where: str) -> tuple[np.ndarray, int]:
    example = parse_tf_example(record)
    if "shape" not in example or "data" not in example:
        raise DataError(
            f"{where} has features {sorted(example)}, not 'shape' and 'data' (the StyleGAN layout "
            "that write_tfrecord_images writes)"
        )
    shape = tuple(int(s) for s in example["shape"])
    data = example["data"][0] if len(example["data"]) else b""
    if len(shape) != 3 or math.prod(shape) != len(data):
        raise DataError(f"{where}: shape {shape} does not match {len(data)} bytes of data")
    image = np.frombuffer(data, np.uint8).reshape(shape).transpose(1, 2, 0)  # CHW -> HWC
    label = example.get("label")
    return image, int(label[0]) if label is not None and len(label) else -1


def _open_tfrecord(
    path: Path,
    *,
    split: str,
    name: str,
    spec: DatasetSpec,
    image_size: int,
    num_channels: int,
    verify_crc: bool = False,
) -> LazySource:
    files = _tfrecord_files(path, split)
    if not files:
        raise MissingDataError(f"no *.tfrecords files at {path}")
    if spec.geometry == "exact":
        # The StyleGAN tool writes one file per resolution (name-r02 ... name-r10): keep the
        # file(s) whose images already have image_size pixels.
        sizes = {f: _decode_image_example(_first_record(f), str(f))[0].shape[:2] for f in files}
        files = [f for f in files if sizes[f] == (image_size, image_size)]
        if not files:
            found = ", ".join(f"{f.name}: {h}x{w}" for f, (h, w) in sizes.items())
            raise DataError(
                f"no TFRecord file at {path} has {image_size}x{image_size} images ({found}); "
                "these images are not resized: set config.data.image_size to one of those "
                "resolutions or point --config.data.path at the file of that resolution"
            )
    index = index_tfrecords(files)

    def read(i: int) -> tuple[np.ndarray, int]:
        record = read_record(index, i, verify_crc=verify_crc)
        return _decode_image_example(record, f"{index.files[index.file_ids[i]]} record {i}")

    return _lazy_source(
        name,
        len(index),
        read,
        spec=spec,
        image_size=image_size,
        num_channels=num_channels,
        num_classes=None,
    )


def _tfds_problem(tfds, tfds_name: str, data_dir: str | None, cause: Exception) -> str:
    """Why TFDS could not open the set, in words (its own errors talk about file formats)."""
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        if not builder.is_prepared():
            return f"nothing is prepared at {builder.data_path}"
        file_format = builder.info.file_format
        return (
            f"it is prepared at {builder.data_path} as "
            f"{getattr(file_format, 'value', file_format)}: {str(cause).strip().splitlines()[0]}"
        )
    except Exception:  # only for the message: fall back to TFDS's own words
        text = str(cause).strip()
        return text.splitlines()[0] if text else type(cause).__name__


def _tfds_help(tfds_name: str, tfds_split: str, data_dir: str | None, problem: str) -> str:
    return (
        f"TFDS dataset {tfds_name!r} (split {tfds_split!r}) cannot be read with random access "
        f"({problem}). Nothing is downloaded here; to prepare it, on a machine with internet "
        "access run\n"
        "    pip install tensorflow tensorflow-datasets\n"
        f"    tfds build {tfds_name} --file_format=array_record --data_dir=DIR\n"
        "and pass --config.data.data_dir=DIR (copy DIR over first if that machine is another one; "
        "without data_dir TFDS looks in ~/tensorflow_datasets or $TFDS_DATA_DIR). "
        f"Or read a local copy with --config.data.path=PATH; {_LOCAL_FORMATS_HELP}."
    )


def _open_tfds(
    *,
    dataset: str,
    split: str,
    name: str,
    spec: DatasetSpec,
    image_size: int,
    num_channels: int,
    data_dir: str | None,
    category: str | None,
) -> LazySource:
    if spec.tfds_name is None:
        raise DataError(
            f"{dataset} is not in TFDS: it is read from TFRecord files (the StyleGAN layout, one "
            "file per resolution); pass --config.data.path=FILE_OR_FOLDER, e.g. the folder "
            f"holding ffhq-r08.tfrecords for 256x256"
        )
    tfds_name = spec.tfds_name
    if "{category}" in tfds_name:
        if not category:
            raise DataError(
                f"{dataset} needs a category: set --config.data.category, e.g. church_outdoor or "
                "bedroom"
            )
        tfds_name = tfds_name.format(category=category)
    tfds_split = spec.test_split if split == "test" else "train"

    # Imported here: only this reader needs TFDS, and importing it costs time.
    import tensorflow_datasets as tfds

    try:
        # download=False: preparing a set needs TensorFlow and network, a separate step (see the
        # error below); an implicit download would hang or fail on an offline cluster.
        ds = tfds.data_source(tfds_name, split=tfds_split, data_dir=data_dir, download=False)
    except tfds.core.DatasetNotFoundError:
        raise DataError(
            f"TFDS has no dataset {tfds_name!r} (config.data.dataset={dataset!r}); known names "
            f"are {sorted(DATASETS)} or any TFDS name, or read a local copy with "
            f"--config.data.path=PATH; {_LOCAL_FORMATS_HELP}"
        ) from None
    except (NotImplementedError, AssertionError, OSError, ValueError, KeyError) as e:
        problem = _tfds_problem(tfds, tfds_name, data_dir, e)
        raise MissingDataError(_tfds_help(tfds_name, tfds_split, data_dir, problem)) from e

    num_classes = spec.num_classes
    try:
        num_classes = int(ds.dataset_info.features["label"].num_classes)
    except (AttributeError, KeyError, TypeError):
        pass

    def read(i: int) -> tuple[np.ndarray, int]:
        example = ds[i]
        label = example.get("label")
        return np.asarray(example["image"]), -1 if label is None else int(label)

    return _lazy_source(
        name,
        len(ds),
        read,
        spec=spec,
        image_size=image_size,
        num_channels=num_channels,
        num_classes=num_classes,
        check_native_shape=False,
    )


# ---------------------------------------------------------------------------------------------
# Entry point.


def detect_source(path: str | os.PathLike) -> str:
    """The source kind (a key of :data:`SOURCES`, not ``"tfds"``) that reads ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no supported format.
    """
    p = Path(path).expanduser()
    text = os.fspath(p)
    if any(ch in text for ch in "*?["):
        matches = [Path(m) for m in glob.glob(text)]
        if matches and all(_is_tfrecord_name(m) for m in matches):
            return "tfrecord"
        raise MissingDataError(f"the pattern {text} matches no *.tfrecords files")
    if not p.exists():
        raise MissingDataError(
            f"--config.data.path={text} does not exist; point it at the data (README, Data) or "
            "leave it unset to read the TFDS copy"
        )
    if p.is_file():
        if p.suffix.lower() == ".npz":
            return "npz"
        if _is_tfrecord_name(p):
            return "tfrecord"
        if _cifar_location(p) is not None:
            return "cifar10_python"
        raise MissingDataError(
            f"cannot tell the format of {text}; name it *.npz / *.tfrecords, or set "
            f"--config.data.source to one of {SOURCES}"
        )
    if _is_idx_folder(p):
        return "mnist_idx"
    if _cifar_location(p) is not None:
        return "cifar10_python"
    for folder in (p, *(p / s for s in SPLITS)):
        if folder.is_dir() and any(_is_tfrecord_name(f) for f in folder.iterdir()):
            return "tfrecord"
    if next((f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS), None) is not None:
        return "folder"
    raise MissingDataError(
        f"{text} holds no supported data; expected one of the {_LOCAL_FORMATS_HELP}"
    )


# The readers of local formats, all called as reader(path, split=, name=, spec=, image_size=,
# num_channels=).
_LOCAL_READERS: dict[str, Callable[..., ImageSource]] = {
    "npz": _open_npz,
    "mnist_idx": _open_mnist_idx,
    "cifar10_python": _open_cifar10_python,
    "folder": _open_folder,
    "tfrecord": _open_tfrecord,
}


def open_image_source(
    *,
    dataset: str,
    split: str,
    image_size: int,
    num_channels: int,
    source: str = "auto",
    path: str | None = None,
    data_dir: str | None = None,
    category: str | None = None,
    verify_crc: bool = False,
) -> ImageSource:
    """Opens one split of a dataset as a random-access :class:`ImageSource`.

    Args:
        dataset: a name of the score_sde configs (``CIFAR10``, ``SVHN``, ``MNIST``,
            ``FashionMNIST``, ``CELEBA``, ``LSUN``, ``FFHQ``, ``CelebAHQ``; case-insensitive),
            ``colored_mnist`` (MNIST tinted by :class:`TintedSource`) or any TFDS name. It
            picks the TFDS name and the crop/resize rule (:data:`DATASETS`).
        split: ``"train"`` or ``"test"`` (TFDS LSUN serves ``"test"`` from its validation split).
        image_size: images come out ``image_size x image_size``.
        num_channels: 1 or 3; grayscale is repeated to RGB, RGB is reduced to luma.
        source: ``"auto"`` (TFDS when ``path`` is None, else detected from ``path``) or one of
            :data:`SOURCES`.
        path: the local file or folder (any source but ``"tfds"``).
        data_dir: the TFDS data dir (``"tfds"`` only; default the TFDS default).
        category: the LSUN category, e.g. ``"church_outdoor"`` or ``"bedroom"`` (TFDS LSUN).
        verify_crc: check TFRecord checksums on every read (slow in Python).

    Returns:
        The source; its ``image_shape`` is ``(image_size, image_size, num_channels)``.

    Raises:
        ValueError: an unknown ``source`` or ``split``, a bad size, or data of the wrong shape.
        FileNotFoundError: the data is not where ``path`` / ``data_dir`` say, with how to get it.
    """
    if dataset_spec(dataset).tinted:
        if num_channels != 3:
            raise DataError(
                f"dataset {dataset!r} is colored: set config.data.num_channels=3 "
                f"(got {num_channels})"
            )
        base = open_image_source(
            dataset=dataset.lower().replace("-", "").replace("_", "").replace("colored", ""),
            split=split,
            image_size=image_size,
            num_channels=1,
            source=source,
            path=path,
            data_dir=data_dir,
            category=category,
            verify_crc=verify_crc,
        )
        return TintedSource(base, split)
    if split not in SPLITS:
        raise DataError(f"split={split!r}; use one of {SPLITS}")
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive int, got {image_size!r}")
    if num_channels not in (1, 3):
        raise DataError(f"num_channels must be 1 or 3, got {num_channels!r}")
    if source != "auto" and source not in SOURCES:
        raise DataError(f"unknown data source {source!r}; use 'auto' or one of {SOURCES}")
    spec = dataset_spec(dataset)
    if source == "auto":
        source = "tfds" if path is None else detect_source(path)
    name = f"{dataset}/{split} ({source}: {path if path is not None else data_dir or 'default'})"
    if source == "tfds":
        return _open_tfds(
            dataset=dataset,
            split=split,
            name=name,
            spec=spec,
            image_size=image_size,
            num_channels=num_channels,
            data_dir=data_dir,
            category=category,
        )
    if path is None:
        raise DataError(
            f"source={source!r} reads local files: set --config.data.path to the "
            f"{source} file or folder"
        )
    local = Path(path).expanduser()
    if source != "tfrecord" and not local.exists():
        raise MissingDataError(
            f"--config.data.path={path} does not exist; point it at the data (README, Data)"
        )
    extra = {"verify_crc": verify_crc} if source == "tfrecord" else {}
    try:
        return _LOCAL_READERS[source](
            local,
            split=split,
            name=name,
            spec=spec,
            image_size=image_size,
            num_channels=num_channels,
            **extra,
        )
    except UserError:
        raise
    except (
        EOFError,
        OSError,
        zipfile.BadZipFile,
        tarfile.TarError,
        zlib.error,
        pickle.UnpicklingError,
        ValueError,
    ) as e:
        # Reading a damaged file fails deep inside numpy, tarfile or PIL: name the file.
        raise DataError(
            f"Cannot read the {split} split of --config.data.path={path} ({source}): "
            f"{type(e).__name__}: {e}. The file looks damaged or truncated; copy or download it "
            "again."
        ) from None
