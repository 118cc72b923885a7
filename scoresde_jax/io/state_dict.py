"""PyTorch state dicts: ``.pth`` files read without PyTorch, and mapped onto Flax trees.

``torch.save``'s pickle holds tensors as ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)``, storages as persistent ids ``("storage", torch.<Type>Storage, key, location,
numel)`` whose bytes follow in a zip archive (PyTorch >= 1.6: ``<name>/data.pkl``,
``<name>/data/<key>``) or, in the legacy format (the FID weights), after pickles of magic number,
protocol, system info, object and storage keys, each as an int64 count and the bytes. Only the
globals a checkpoint needs are known, so a file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np
from flax import traverse_util

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Storage:
    """A flat storage whose bytes are read after the pickle that refers to it."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None

    def fill(self, raw: bytes, little_endian: bool) -> None:
        if len(raw) != self.numel * self.dtype.itemsize:
            raise ValueError(
                f"storage {self.key} holds {len(raw)} bytes, expected {self.numel} elements of "
                f"{self.dtype.itemsize} bytes"
            )
        order = self.dtype.newbyteorder("<" if little_endian else ">")
        self.data = np.frombuffer(raw, order).astype(self.dtype, copy=False)

    def array(self) -> np.ndarray:
        if self.data is None:
            raise ValueError(f"the file has no data for storage {self.key}")
        return self.data


class _StorageView(NamedTuple):  # legacy files: a storage sharing memory with another
    base: _Storage
    offset: int
    numel: int

    def array(self) -> np.ndarray:
        return self.base.array()[self.offset : self.offset + self.numel]


class _TensorRef(NamedTuple):
    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.array()
        if min((*self.size, *self.stride, self.offset), default=0) < 0:
            raise ValueError("negative tensor size, stride or offset")
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= flat.size:
            raise ValueError(f"tensor reaches element {last} of a storage of {flat.size}")
        strides = [s * flat.itemsize for s in self.stride]
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], self.size, strides, writeable=False
        )
        return np.array(view)


def _rebuild_tensor_v2(storage, offset, size, stride, *_):
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
    **{("torch", n): np.dtype(t) for n, t in _STORAGE_DTYPES.items()},  # storage types
}


def _as_str(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global other than tensors and containers (never handed to torch)."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(
                f"refusing to load {module}.{name}: only tensors and containers of them are read"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) < 5 or _as_str(pid[0]) != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, np.dtype):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        key = _as_str(key)
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type, int(numel))
        if len(pid) > 5 and pid[5] is not None:
            _, offset, view_numel = pid[5]
            return _StorageView(storage, int(offset), int(view_numel))
        return storage


def _materialize(obj: Any) -> Any:
    """Tensors (ours or torch's) as numpy arrays, inside any nesting of dicts, lists and tuples."""
    if isinstance(obj, _TensorRef):
        return obj.to_numpy()
    if hasattr(obj, "detach"):  # a torch tensor, from the fallback
        return obj.detach().cpu().numpy()
    if isinstance(obj, Mapping):
        return {k: _materialize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path} is a zip file but not a PyTorch archive (no */data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            little = archive.read(prefix + "byteorder").decode("ascii").strip() == "little"
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            storage.fill(archive.read(f"{prefix}data/{key}"), little)
    return obj


def _read_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        plain = lambda: _Unpickler(f, {}).load()
        if plain() != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a PyTorch file (wrong magic number)")
        if (version := plain()) != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: unsupported PyTorch serialization protocol {version}")
        sys_info = plain()
        little = sys_info.get("little_endian", True) if isinstance(sys_info, Mapping) else True
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(f, storages).load()
        for key in map(_as_str, plain()):
            storage = storages[key]
            header = f.read(8)
            if len(header) != 8:
                raise ValueError(f"{path} ends before storage {key}")
            (numel,) = struct.unpack("<q" if little else ">q", header)  # as PyTorch checks it
            if numel != storage.numel:
                raise ValueError(f"storage {key} has {numel} elements, the pickle {storage.numel}")
            storage.fill(f.read(storage.numel * storage.dtype.itemsize), little)
    return obj


def read_torch_file(path: str | Path) -> Any:
    """A ``torch.save``-d object of dicts, lists and tensors, with tensors as numpy arrays (dtypes
    as stored). Where this reader fails, an installed PyTorch's ``torch.load(...,
    weights_only=True)`` gets a second try."""
    path = Path(path)
    try:
        return _materialize(_read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path))
    except _RefusedGlobal as err:
        raise ValueError(f"cannot read {path} as a PyTorch file: {err}") from err
    except Exception as err:  # whatever stopped the minimal reader, torch may still read it
        try:
            import torch
        except ImportError:
            raise ValueError(f"cannot read {path} as a PyTorch file: {err}") from err
        try:
            return _materialize(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as torch_err:
            raise ValueError(
                f"cannot read {path} as a PyTorch file: {err} (torch.load: {torch_err})"
            ) from torch_err


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A ``.pth`` state dict (key -> array, dtypes as stored); see :func:`read_torch_file`."""
    obj = read_torch_file(path)
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


class ConversionError(ValueError):
    """A state dict does not fit the model: missing or unexpected keys, or wrong shapes."""


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drops the ``module.`` prefix that ``torch.nn.DataParallel`` puts on every key."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _torch_leaf(name: str, ndim: int) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """PyTorch name and layout change of a Flax leaf (Conv OIHW -> HWIO, Linear transposed)."""
    if name in ("kernel", "weight") and ndim == 4:
        return "weight", lambda w: np.transpose(w, (2, 3, 1, 0))
    if name == "kernel" and ndim == 2:
        return "weight", np.transpose
    renamed = {"kernel": "weight", "scale": "weight", "embedding": "weight"}
    renamed |= {"mean": "running_mean", "var": "running_var"}  # batch statistics
    return renamed.get(name, name), lambda w: w


def mismatch_error(
    what: str, missing: list[str], unexpected: list[str], mismatched: list[str], limit: int = 12
) -> ConversionError | None:
    """One error listing every problem (the first ``limit`` of each kind), or ``None``."""
    problems = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            problems.append(f"{title} ({len(items)}): {', '.join(items[:limit])}{more}")
    return ConversionError(f"{what}:\n  " + "\n  ".join(problems)) if problems else None


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    abstract: Mapping,
    torch_prefix: Callable[[tuple[str, ...]], str],
    *,
    ignore: Callable[[str], bool] = lambda key: False,
    buffers: Mapping[str, Callable[[np.ndarray], None]] | None = None,
    model_name: str = "model",
    source: str = "The state dict",
) -> dict:
    """A Flax tree of float32 arrays shaped like ``abstract`` (e.g. ``jax.eval_shape`` of ``init``)
    from a state dict, strictly (a :class:`ConversionError` lists every problem).

    ``torch_prefix`` maps a leaf's Flax path less its leaf name to the PyTorch module name
    (``("res1_0", "conv1") -> "res1.0.conv1"``); ``ignore`` keys need no counterpart;
    ``buffers`` maps non-parameters to checks that raise ``ValueError`` on a mismatch.
    """
    state_dict = strip_module_prefix(state_dict)
    buffers = buffers or {}
    out: dict[tuple[str, ...], np.ndarray] = {}
    used: set[str] = set()
    missing, mismatched = [], []
    for path, leaf in traverse_util.flatten_dict(abstract).items():
        shape = tuple(leaf.shape)
        name, to_flax = _torch_leaf(path[-1], len(shape))
        key = ".".join(p for p in (torch_prefix(path[:-1]), name) if p)
        if key not in state_dict:
            missing.append(f"{key} (for {'/'.join(path)}, shape {shape})")
            continue
        used.add(key)
        value = np.asarray(state_dict[key])
        if value.dtype.kind != "f" and value.dtype != ml_dtypes.bfloat16:
            raise ConversionError(f"{source}: {key} has dtype {value.dtype}, not floating point")
        value = to_flax(value.astype(np.float32))
        if value.shape != shape:
            mismatched.append(
                f"{key}: {tuple(state_dict[key].shape)} gives {value.shape}, "
                f"{model_name} expects {shape} at {'/'.join(path)}"
            )
            continue
        out[path] = np.ascontiguousarray(value)
    unexpected = sorted(k for k in state_dict if not (k in used or k in buffers or ignore(k)))
    what = f"{source} does not match this {model_name}"
    if error := mismatch_error(what, missing, unexpected, mismatched):
        raise error
    for key, check in buffers.items():
        if key in state_dict:
            check(np.asarray(state_dict[key]))
    return traverse_util.unflatten_dict(out)
