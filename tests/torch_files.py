"""Files in ``torch.save``'s two layouts (zip archive and the older pickle sequence), written
byte by byte without PyTorch.

Each tensor is pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
False, OrderedDict())`` whose storage is the persistent id ``("storage", torch.<T>Storage, key,
"cpu", numel)`` (with a trailing ``None``, the view metadata, in the legacy format).
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np

_STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.uint8): "ByteStorage",
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class View(NamedTuple):
    """A tensor as a view of one of the file's storages (element offset, size, stride)."""

    storage: str
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def op_str(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _ordered_dict() -> bytes:
    return op_global("collections", "OrderedDict") + b")R"  # OrderedDict()


class _Writer:
    def __init__(self, storages: dict[str, np.ndarray], legacy: bool):
        self.storages, self.legacy = dict(storages), legacy

    def tensor(self, view: View) -> bytes:
        flat = self.storages[view.storage]
        pid = [op_str("storage"), op_global("torch", _STORAGE_NAMES[flat.dtype])]
        pid += [op_str(view.storage), op_str("cpu"), _int(flat.size)]
        pid += [b"N"] if self.legacy else []
        args = op_tuple(
            op_tuple(*pid) + b"Q",  # BINPERSID
            _int(view.offset),
            op_tuple(*map(_int, view.size)),
            op_tuple(*map(_int, view.stride)),
            b"\x89",  # requires_grad=False
            _ordered_dict(),  # backward hooks
        )
        return op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"

    def dump(self, obj) -> bytes:
        if isinstance(obj, np.ndarray):  # a tensor with a storage of its own
            key = str(94_000_000 + len(self.storages))
            value = np.ascontiguousarray(obj)
            self.storages[key] = value.reshape(-1)
            stride = tuple(s // value.itemsize for s in value.strides)
            return self.tensor(View(key, 0, value.shape, stride))
        if isinstance(obj, View):
            return self.tensor(obj)
        if isinstance(obj, OrderedDict):  # a state dict, with its ``_metadata`` set by BUILD
            items = b"".join(self.dump(k) + self.dump(v) for k, v in obj.items())
            metadata = b"}" + op_str("_metadata") + _ordered_dict() + b"s"
            return _ordered_dict() + b"(" + items + b"u" + metadata + b"b"
        if isinstance(obj, dict):
            return b"}(" + b"".join(self.dump(k) + self.dump(v) for k, v in obj.items()) + b"u"
        if isinstance(obj, list):
            return b"](" + b"".join(map(self.dump, obj)) + b"e"  # APPENDS
        if isinstance(obj, tuple):
            return op_tuple(*map(self.dump, obj))
        if obj is None or isinstance(obj, bool):
            return {None: b"N", True: b"\x88", False: b"\x89"}[obj]
        if isinstance(obj, int):
            return _int(obj)
        if isinstance(obj, float):
            return b"G" + struct.pack(">d", obj)  # BINFLOAT
        if isinstance(obj, str):
            return op_str(obj)
        raise TypeError(f"cannot write {type(obj).__name__}")


def write_torch_file(
    path: Path, obj, storages: dict[str, np.ndarray] | None = None, *, legacy: bool = False
) -> Path:
    """Writes ``obj`` (dicts, ``OrderedDict`` state dicts, lists, scalars, arrays and
    :class:`View` s of ``storages``) as ``torch.save`` would."""
    writer = _Writer(storages or {}, legacy)
    pkl = b"\x80\x02" + writer.dump(obj) + b"."
    if not legacy:  # PyTorch >= 1.6: zip archive of data.pkl and one raw file per storage
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("archive/data.pkl", pkl)
            archive.writestr("archive/byteorder", "little")
            for key, flat in writer.storages.items():
                data = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
                archive.writestr(f"archive/data/{key}", data)
            archive.writestr("archive/version", "3\n")
        return path
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2}}
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, sys_info):
            f.write(pickle.dumps(header, protocol=2))
        f.write(pkl)
        keys = sorted(writer.storages)
        f.write(pickle.dumps(keys, protocol=2))
        for key in keys:
            flat = writer.storages[key]
            f.write(struct.pack("<q", flat.size) + flat.tobytes())
    return path
