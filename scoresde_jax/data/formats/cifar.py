"""The CIFAR-10 python archive (``cifar-10-python.tar.gz``) or its ``cifar-10-batches-py/``
folder; read into memory by an unpickler that admits only arrays."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from scoresde_jax.data.formats.base import ArraySource, Target
from scoresde_jax.errors import DataError, MissingDataError

_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_DIR = "cifar-10-batches-py"


class UnsafePickleError(DataError, pickle.UnpicklingError):
    """A pickled CIFAR-10 batch asks for code to run: it is not a CIFAR-10 file."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays, lists and dicts, all a CIFAR batch needs, so a tampered
    archive cannot run code."""

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


def _batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
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


def _location(path: Path) -> Path | None:
    """The archive or batch folder that ``path`` is or directly contains, else ``None``."""
    if path.is_file():
        return path if tarfile.is_tarfile(path) else None
    for folder in (path, path / _DIR):
        if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
            return folder
    archive = path / "cifar-10-python.tar.gz"
    return archive if archive.is_file() else None


def detect(path: Path) -> bool:
    return _location(path) is not None


def _read_batches(location: Path, split: str):
    """``(raw bytes, where)`` of each batch file of ``split``."""
    if location.is_dir():
        for batch in _BATCHES[split]:
            file = location / batch
            if not file.is_file():
                raise MissingDataError(f"{location} has no {batch} (needed for the {split} split)")
            yield file.read_bytes(), str(file)
        return
    with tarfile.open(location, "r:*") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        for batch in _BATCHES[split]:
            if batch not in members:
                raise MissingDataError(f"{location} has no member {_DIR}/{batch}")
            yield tar.extractfile(members[batch]).read(), f"{location}:{batch}"


def open_split(path: Path, split: str, target: Target) -> ArraySource:
    location = _location(path)
    if location is None:
        raise MissingDataError(
            f"{path} is neither cifar-10-python.tar.gz nor a folder holding {_DIR}/ "
            "(data_batch_1..5, test_batch)"
        )
    parts = [_batch(raw, where) for raw, where in _read_batches(location, split)]
    images, labels = (np.concatenate([p[k] for p in parts]) for k in (0, 1))
    return target.arrays(images, labels, str(location))
