"""Every supported image format -> a random-access uint8 source at model size; each local format
module has ``detect(path)`` and ``open_split(path, split, target)`` (no TensorFlow needed)."""

from __future__ import annotations

import glob
import os
import pickle
import tarfile
import zipfile
import zlib
from pathlib import Path

from scoresde_jax.data.formats import cifar, folder, idx, npz, tfds, tfrecord
from scoresde_jax.data.formats.base import (
    LOCAL_FORMATS_HELP,
    SPLITS,
    ImageSource,
    Target,
    TintedSource,
    dataset_spec,
)
from scoresde_jax.errors import DataError, MissingDataError, UserError

__all__ = ["SOURCES", "detect_source", "open_image_source"]

# The readers of local files, by the name config.data.source gives them.
LOCAL_FORMATS = {
    "npz": npz,
    "mnist_idx": idx,
    "cifar10_python": cifar,
    "folder": folder,
    "tfrecord": tfrecord,
}
SOURCES = ("tfds", *LOCAL_FORMATS)
# What reading a damaged file raises deep inside numpy, tarfile, pickle or PIL.
_DAMAGED = (
    EOFError,
    OSError,
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    pickle.UnpicklingError,
    ValueError,
)


def detect_source(path: str | os.PathLike) -> str:
    """The local format (a key of ``LOCAL_FORMATS``) that reads ``path``."""
    p = Path(path).expanduser()
    text = os.fspath(p)
    if any(ch in text for ch in "*?["):
        matches = [Path(m) for m in glob.glob(text)]
        if matches and all(tfrecord.is_tfrecord_name(m) for m in matches):
            return "tfrecord"
        raise MissingDataError(f"the pattern {text} matches no *.tfrecords files")
    if not p.exists():
        raise MissingDataError(
            f"--config.data.path={text} does not exist; point it at the data (README, Data) or "
            "leave it unset to read the TFDS copy"
        )
    if p.is_file():
        order = ("npz", "tfrecord", "cifar10_python")
        problem = (
            f"cannot tell the format of {text}; name it *.npz / *.tfrecords, or set "
            f"--config.data.source to one of {SOURCES}"
        )
    else:  # an image folder last: any folder holding an image would pass for one
        order = ("mnist_idx", "cifar10_python", "tfrecord", "folder")
        problem = f"{text} holds no supported data; expected one of the {LOCAL_FORMATS_HELP}"
    for kind in order:
        if LOCAL_FORMATS[kind].detect(p):
            return kind
    raise MissingDataError(problem)


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
    """Opens one split of ``dataset`` (a :data:`DATASETS` key or TFDS name) as an ImageSource;
    ``source="auto"``: TFDS without ``path``, else its detected format."""
    request = dict(locals())  # the arguments, to open the gray base of a tinted set
    spec = dataset_spec(dataset)
    if spec.tinted:
        if num_channels != 3:
            raise DataError(
                f"dataset {dataset!r} is colored: set config.data.num_channels=3 "
                f"(got {num_channels})"
            )
        gray = dataset.lower().replace("-", "").replace("_", "").replace("colored", "")
        return TintedSource(
            open_image_source(**{**request, "dataset": gray, "num_channels": 1}), split
        )
    if split not in SPLITS:
        raise DataError(f"split={split!r}; use one of {SPLITS}")
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive int, got {image_size!r}")
    if num_channels not in (1, 3):
        raise DataError(f"num_channels must be 1 or 3, got {num_channels!r}")
    if source != "auto" and source not in SOURCES:
        raise DataError(f"unknown data source {source!r}; use 'auto' or one of {SOURCES}")
    if source == "auto":
        source = "tfds" if path is None else detect_source(path)
    name = f"{dataset}/{split} ({source}: {path if path is not None else data_dir or 'default'})"
    target = Target(name, spec, image_size, num_channels)
    if source == "tfds":
        return tfds.open_split(dataset, split, target, data_dir=data_dir, category=category)
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
    options = {"verify_crc": verify_crc} if source == "tfrecord" else {}
    try:
        return LOCAL_FORMATS[source].open_split(local, split, target, **options)
    except UserError:
        raise
    except _DAMAGED as e:
        raise DataError(
            f"Cannot read the {split} split of --config.data.path={path} ({source}): "
            f"{type(e).__name__}: {e}. The file looks damaged or truncated; copy or download it "
            "again."
        ) from None
