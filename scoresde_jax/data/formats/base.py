"""What every reader shares: the source types, the dataset names, and :class:`Target`, which
checks, logs and fits a reader's raw images to the model's size."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from scoresde_jax.data.geometry import describe_conversion, prepare_image, prepare_images
from scoresde_jax.errors import DataError, MissingDataError

log = logging.getLogger(__name__)


SPLITS = ("train", "test")
LOCAL_FORMATS_HELP = (
    "local formats (read without TensorFlow): an .npz with train_images/test_images arrays, "
    "a folder of MNIST/Fashion-MNIST IDX files, the CIFAR-10 python archive "
    "(cifar-10-python.tar.gz or cifar-10-batches-py/), a folder of images, or TFRecord files "
    "(*.tfrecords, the FFHQ/CelebA-HQ layout)"
)


@runtime_checkable
class ImageSource(Protocol):
    """A random-access dataset split (``num_classes`` ``None`` without labels)."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int | None

    def __len__(self) -> int: ...

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(images uint8 [n, H, W, C], labels int32 [n], -1 where unknown)``."""
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
    """A split held in memory at the model's size."""

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
    """A split decoded one example at a time: ``fit(read(i)[0])`` (thread-safe)."""

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
    """Gray images times one saturated color per example (``colored_mnist``): example ``i`` has hue
    ``frac(i * phi + offset)`` (golden ratio conjugate ``phi``, ``offset`` per split), independent
    of the digit; gray ``g`` becomes ``round(g * rgb)``."""

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


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How a named dataset is found and shaped: ``tfds_name`` may hold ``{category}`` (``None``:
    TFRecords only); data of another shape than ``native_shape`` is refused (a wrong file)."""

    tfds_name: str | None
    geometry: str
    test_split: str = "test"
    num_classes: int | None = None
    tinted: bool = False
    native_shape: tuple[int, int, int] | None = None


# The dataset names of the score_sde configs (case, "-" and "_" ignored).
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
    """The :data:`DATASETS` entry of ``dataset``, else a TFDS name with resize-and-crop geometry."""
    key = dataset.lower().replace("-", "").replace("_", "")
    return DATASETS.get(key, DatasetSpec(dataset, "resize_small_crop"))


def split_folder(path: Path, split: str) -> Path:
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


def _shape_text(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


@dataclasses.dataclass(frozen=True)
class Target:
    """What a reader delivers: split ``name`` of a ``spec`` dataset at the model's size."""

    name: str
    spec: DatasetSpec
    image_size: int
    num_channels: int

    @property
    def _fit_args(self) -> dict:
        return dict(
            image_size=self.image_size, num_channels=self.num_channels, geometry=self.spec.geometry
        )

    def _inspect(self, native_shape, *, where: str, logged_as: str, check: bool = True) -> None:
        """Refuses images foreign to the dataset and logs how the others are converted."""
        native = self.spec.native_shape
        if check and native is not None and tuple(native_shape) != native:
            dataset = self.name.split("/", 1)[0]
            raise DataError(
                f"{where} holds {_shape_text(native_shape)} images, but {dataset} images are "
                f"{_shape_text(native)}: this looks like another dataset. Point "
                f"--config.data.path at the {dataset} files, or, to train on these images anyway "
                "(converted to the config's image_size and num_channels), name them with another "
                "--config.data.dataset (any name but the known ones, e.g. custom)."
            )
        size, channels = self.image_size, self.num_channels
        what = describe_conversion(native_shape, **self._fit_args)
        if what:
            log.info(
                "Data %s: images of %s are converted to %dx%dx%d: %s",
                *(logged_as, _shape_text(native_shape), size, size, channels, what),
            )

    def arrays(self, images: np.ndarray, labels: np.ndarray | None, where: str) -> ArraySource:
        """An :class:`ArraySource` of uint8 ``images`` ``[N, H, W(, C)]`` read from ``where``."""
        if images.dtype != np.uint8:
            raise DataError(f"{where}: images must be uint8 (0..255), got {images.dtype}")
        if images.ndim == 3:  # [N, H, W] grayscale
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise DataError(
                f"{where}: images must be [N, H, W, C] with C = 1 or 3 (channels last), "
                f"got shape {images.shape}"
            )
        self._inspect(images.shape[1:], where=where, logged_as=self.name)
        if labels is None:
            labels = np.full(len(images), -1, np.int32)
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(images):
            raise DataError(f"{where}: {len(labels)} labels for {len(images)} images")
        labels = labels.astype(np.int32)
        num_classes = None
        if labels.size and labels.min() >= 0:
            num_classes = self.spec.num_classes or int(labels.max()) + 1
        images = prepare_images(images, **self._fit_args)
        return ArraySource(name=self.name, images=images, labels=labels, num_classes=num_classes)

    def lazy(
        self,
        length: int,
        read: Callable[[int], tuple[np.ndarray, int]],
        num_classes: int | None,
        *,
        check_native_shape: bool = True,
    ) -> LazySource:
        """A :class:`LazySource` of ``read``, its first image checked unless
        ``check_native_shape`` is False (TFDS serves a dataset by its name)."""
        if length:
            first = np.asarray(read(0)[0])
            first = first[..., None] if first.ndim == 2 else first
            self._inspect(
                first.shape,
                where=self.name,
                logged_as=f"{self.name} (its first image)",
                check=check_native_shape,
            )
        shape = (self.image_size, self.image_size, self.num_channels)
        fit = functools.partial(prepare_image, **self._fit_args)
        return LazySource(self.name, length, read, fit, shape, num_classes)
