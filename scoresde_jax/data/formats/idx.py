"""MNIST / Fashion-MNIST IDX files (``train-images-idx3-ubyte[.gz]``, ``t10k-...``) in a folder;
read into memory."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from scoresde_jax.data.formats.base import SPLITS, ArraySource, Target
from scoresde_jax.errors import DataError, MissingDataError

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file, gzip-compressed or not: two zero bytes, a type code (0x08 = uint8, ...),
    the number of dimensions ``d``, ``d`` big-endian uint32 sizes, then the data (row-major)."""
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
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (magic bytes {raw[:4].hex()})")
    dtype, ndim = _DTYPES[raw[2]], raw[3]
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


def _file(folder: Path, split: str, kind: str, ndim: int) -> Path | None:
    for sep in ("-", "."):  # "train-images-idx3-ubyte" and the "train-images.idx3-ubyte" mirrors
        for suffix in ("", ".gz"):
            candidate = folder / f"{_PREFIX[split]}-{kind}{sep}idx{ndim}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def detect(path: Path) -> bool:
    return any(_file(path, split, "images", 3) for split in SPLITS)


def open_split(path: Path, split: str, target: Target) -> ArraySource:
    image_file = _file(path, split, "images", 3)
    label_file = _file(path, split, "labels", 1)
    if image_file is None or label_file is None:
        prefix = _PREFIX[split]
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
    return target.arrays(images, labels, str(image_file))
