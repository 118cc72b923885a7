"""TFRecord files of ``tf.train.Example`` protos in pure Python (no TensorFlow), in the StyleGAN
dataset tool's layout (``shape`` int64 ``[C, H, W]``, ``data`` raw uint8 CHW). A record is
``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`` (LE).
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from scoresde_jax.errors import DataError


def _crc32c_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):  # reflected Castagnoli polynomial
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
    return table.astype(np.uint32)


_CRC32C_TABLE_NP = _crc32c_table()
_CRC32C_TABLE = tuple(_CRC32C_TABLE_NP.tolist())
# Below this size the plain byte loop beats the set-up cost of the chunked numpy version.
_CRC_CHUNKED_MIN_BYTES = 4096


def _crc32c_update(register: int, data: bytes) -> int:
    """The raw CRC register after feeding ``data`` (no initial value or final xor applied)."""
    table = _CRC32C_TABLE
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, e.g. ``crc32c(b"123456789") == 0xE3069283``. Large inputs
    run ``k`` chunks in numpy lockstep, chained by the linear operator "append ``m`` zero bytes"
    (milliseconds for a megapixel image, where a Python byte loop takes a second)."""

    buf = np.frombuffer(data, np.uint8)
    n = buf.size
    if n < _CRC_CHUNKED_MIN_BYTES:
        return _crc32c_update(0xFFFFFFFF, bytes(data)) ^ 0xFFFFFFFF
    k = math.isqrt(n)
    m = n // k
    # Column j holds byte j of every chunk, contiguous so each lockstep step reads one row.
    columns = np.ascontiguousarray(buf[: k * m].reshape(k, m).T)
    table = _CRC32C_TABLE_NP
    raw = np.zeros(k, np.uint32)
    for column in columns:
        raw = table[(raw ^ column) & 0xFF] ^ (raw >> 8)
    # shift[b][v] = register (v << 8b) after m zero bytes; the operator is linear, so the shifted
    # register is the xor of its four bytes' entries.
    shift = np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]
    shift = shift.reshape(-1)
    for _ in range(m):
        shift = table[shift & 0xFF] ^ (shift >> 8)
    s0, s1, s2, s3 = shift.reshape(4, 256).tolist()
    r = 0xFFFFFFFF  # the register, chained over the chunks
    for chunk_raw in raw.tolist():
        r = s0[r & 0xFF] ^ s1[(r >> 8) & 0xFF] ^ s2[(r >> 16) & 0xFF] ^ s3[r >> 24] ^ chunk_raw
    return _crc32c_update(r, bytes(buf[k * m :])) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant (mod 2^32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# Minimal protobuf wire format of tf.train.Example { Features features = 1; }, Features
# { map<string, Feature> feature = 1; } (entry: key = 1, value = 2), Feature { oneof {BytesList
# bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3;} }, each list
# { repeated value = 1; } (floats and int64s packed).
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LEN, _WIRE_FIXED32 = 0, 1, 2, 5


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise DataError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
    raise DataError("protobuf varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field_number, wire_type, value)`` of each field of one serialized message."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _WIRE_VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire in (_WIRE_LEN, _WIRE_FIXED64, _WIRE_FIXED32):
            if wire == _WIRE_LEN:
                length, pos = _read_varint(buf, pos)
            else:
                length = 8 if wire == _WIRE_FIXED64 else 4
            value = buf[pos : pos + length]
            pos += length
        else:
            raise DataError(f"unsupported protobuf wire type {wire} (field {field})")
        if pos > end:
            raise DataError(f"truncated protobuf message (field {field})")
        yield field, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _payloads(buf: memoryview, number: int) -> list[memoryview]:
    """The length-delimited values of field ``number`` of a message."""
    return [v for f, w, v in _fields(buf) if f == number and w == _WIRE_LEN]


def _parse_feature(buf: memoryview) -> list[bytes] | np.ndarray:
    result: list[bytes] | np.ndarray = []
    for kind, wire, payload in _fields(buf):
        if wire != _WIRE_LEN:
            continue
        if kind == 1:  # bytes_list
            result = [bytes(v) for v in _payloads(payload, 1)]
        elif kind == 2:  # float_list: packed (wire 2) or one fixed32 per value (wire 5)
            parts = [bytes(v) for f, w, v in _fields(payload) if f == 1 and w != _WIRE_VARINT]
            result = np.frombuffer(b"".join(parts), "<f4").astype(np.float32)
        elif kind == 3:  # int64_list: packed varints (wire 2) or one varint per value (wire 0)
            values: list[int] = []
            for f, w, v in _fields(payload):
                if f == 1 and w == _WIRE_VARINT:
                    values.append(_signed64(v))
                elif f == 1 and w == _WIRE_LEN:
                    pos = 0
                    while pos < len(v):
                        item, pos = _read_varint(v, pos)
                        values.append(_signed64(item))
            result = np.asarray(values, np.int64)
    return result


def parse_tf_example(serialized: bytes) -> dict[str, list[bytes] | np.ndarray]:
    """Decodes a serialized ``tf.train.Example`` into ``{name: list[bytes] (bytes_list) or
    float32 array (float_list) or int64 array (int64_list)}``."""
    features: dict[str, list[bytes] | np.ndarray] = {}
    for features_msg in _payloads(memoryview(serialized), 1):
        for entry in _payloads(features_msg, 1):
            keys, values = _payloads(entry, 1), _payloads(entry, 2)
            key = bytes(keys[-1]).decode("utf-8") if keys else ""
            features[key] = _parse_feature(values[-1] if values else memoryview(b""))
    return features


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | _WIRE_LEN) + _varint(len(payload)) + payload


def encode_tf_example(features: Mapping[str, bytes | Sequence[int]]) -> bytes:
    """Serializes a ``tf.train.Example``: ``bytes`` values become a one-element ``bytes_list``,
    integer sequences a packed ``int64_list``. Keys are written sorted, so output is stable."""
    entries = []
    for key, value in sorted(features.items()):
        if isinstance(value, bytes | bytearray | memoryview):
            feature = _len_field(1, _len_field(1, bytes(value)))
        else:
            packed = b"".join(_varint(int(v) & 0xFFFFFFFFFFFFFFFF) for v in value)
            feature = _len_field(3, _len_field(1, packed))
        entries.append(_len_field(1, _len_field(1, key.encode("utf-8")) + _len_field(2, feature)))
    return _len_field(1, b"".join(entries))


_HEADER = struct.Struct("<QI")


@dataclasses.dataclass(frozen=True, eq=False)
class TFRecordIndex:
    """Where every record of some TFRecord files lies: record ``i`` is in ``files[file_ids[i]]``,
    its data at byte ``offsets[i]`` (after the 12-byte header), ``lengths[i]`` bytes long."""

    files: tuple[str, ...]
    file_ids: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)


def _scan_file(path: str, verify_crc: bool) -> tuple[list[int], list[int]]:
    offsets, lengths = [], []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise DataError(f"{path}: truncated TFRecord header at byte {pos}")
            length, length_crc = _HEADER.unpack(header)
            if verify_crc and masked_crc32c(header[:8]) != length_crc:
                raise DataError(f"{path}: corrupt TFRecord length at byte {pos} (CRC mismatch)")
            if (end := pos + _HEADER.size + length + 4) > size:
                raise DataError(
                    f"{path}: TFRecord at byte {pos} claims {length} bytes but "
                    "the file ends first (truncated or not a TFRecord file)"
                )
            offsets.append(pos + _HEADER.size)
            lengths.append(length)
            pos = f.seek(end)
    return offsets, lengths


def index_tfrecords(
    files: Sequence[str | os.PathLike], *, verify_crc: bool = False
) -> TFRecordIndex:
    """Scans the record headers of ``files`` once (seeking over the data) to build the index."""
    names = tuple(os.fspath(p) for p in files)
    scans = [_scan_file(name, verify_crc) for name in names]
    return TFRecordIndex(
        files=names,
        file_ids=np.asarray([i for i, (o, _) in enumerate(scans) for _ in o], np.int32),
        offsets=np.asarray([x for o, _ in scans for x in o], np.int64),
        lengths=np.asarray([x for _, n in scans for x in n], np.int64),
    )


def read_record(index: TFRecordIndex, i: int, *, verify_crc: bool = False) -> bytes:
    """The data of record ``i``; ``verify_crc`` checks both checksums. Each call opens the file
    afresh, so a prefetching thread needs no lock."""
    path = index.files[index.file_ids[i]]
    offset, length = int(index.offsets[i]), int(index.lengths[i])
    with open(path, "rb") as f:
        f.seek(offset - _HEADER.size)
        raw = f.read(_HEADER.size + length + 4)
    if len(raw) != _HEADER.size + length + 4:
        raise DataError(f"{path}: record {i} is truncated")
    data = raw[_HEADER.size : _HEADER.size + length]
    if not verify_crc:
        return data
    stored_length, length_crc = _HEADER.unpack(raw[: _HEADER.size])
    (data_crc,) = struct.unpack("<I", raw[_HEADER.size + length :])
    if stored_length != length or masked_crc32c(raw[:8]) != length_crc:
        raise DataError(f"{path}: corrupt length of record {i} at byte {offset} (CRC mismatch)")
    if masked_crc32c(data) != data_crc:
        raise DataError(f"{path}: corrupt data in record {i} at byte {offset} (CRC mismatch)")
    return data


def first_record(path: str | os.PathLike) -> bytes:
    """The data of the first record of ``path``, read without indexing the file."""
    with open(path, "rb") as f:
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise DataError(f"{path} is empty or not a TFRecord file")
        length = _HEADER.unpack(header)[0]
        data = f.read(length)
    if len(data) != length:
        raise DataError(f"{path}: first record is truncated (not a TFRecord file?)")
    return data


def write_tfrecord_images(
    path: str | os.PathLike, images: np.ndarray, labels: np.ndarray | None = None
) -> None:
    """Writes uint8 ``images [N, H, W(, C)]`` (and integer ``labels``) to ``path`` in the StyleGAN
    layout, plus ``label = [label]``; read it back with ``--config.data.path=FILE``."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"images must be [N, H, W, C], got shape {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise DataError(f"{len(labels)} labels for {len(images)} images")
    with open(path, "wb") as f:
        for i, image in enumerate(images):
            chw = np.ascontiguousarray(image.transpose(2, 0, 1))
            features = {"shape": list(chw.shape), "data": chw.tobytes()}
            if labels is not None:
                features["label"] = [int(labels[i])]
            record = encode_tf_example(features)
            length = struct.pack("<Q", len(record))
            f.write(length + struct.pack("<I", masked_crc32c(length)) + record)
            f.write(struct.pack("<I", masked_crc32c(record)))


def read_image_example(record: bytes, where: str) -> tuple[np.ndarray, int]:
    """``(uint8 HWC image, label or -1)`` of one record written by :func:`write_tfrecord_images`."""
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
