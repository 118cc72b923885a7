"""TFRecord files in the StyleGAN layout (FFHQ, CelebA-HQ): a ``*.tfrecords`` file, a folder of
them (optionally split into train/ and test/) or a glob; decoded lazily."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from scoresde_jax.data.formats.base import SPLITS, LazySource, Target, split_folder
from scoresde_jax.errors import DataError, MissingDataError
from scoresde_jax.io.tfrecord import first_record, index_tfrecords, read_image_example, read_record


def is_tfrecord_name(path: Path) -> bool:
    return path.name.endswith((".tfrecords", ".tfrecord"))


def detect(path: Path) -> bool:
    if path.is_file():
        return is_tfrecord_name(path)
    folders = (path, *(path / s for s in SPLITS))
    return any(f.is_dir() and any(map(is_tfrecord_name, f.iterdir())) for f in folders)


def _files(path: Path, split: str) -> list[Path]:
    text = os.fspath(path)
    if any(ch in text for ch in "*?["):
        return [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
    if path.is_dir():
        folder = split_folder(path, split)
        return sorted(p for p in folder.iterdir() if p.is_file() and is_tfrecord_name(p))
    return [path] if path.is_file() else []


def open_split(path: Path, split: str, target: Target, *, verify_crc: bool = False) -> LazySource:
    files = _files(path, split)
    if not files:
        raise MissingDataError(f"no *.tfrecords files at {path}")
    if target.spec.geometry == "exact":
        # The StyleGAN tool writes one file per resolution (name-r02 ... name-r10): keep the
        # file(s) whose images already have image_size pixels.
        size = target.image_size
        sizes = {f: read_image_example(first_record(f), str(f))[0].shape[:2] for f in files}
        files = [f for f in files if sizes[f] == (size, size)]
        if not files:
            found = ", ".join(f"{f.name}: {h}x{w}" for f, (h, w) in sizes.items())
            raise DataError(
                f"no TFRecord file at {path} has {size}x{size} images ({found}); "
                "these images are not resized: set config.data.image_size to one of those "
                "resolutions or point --config.data.path at the file of that resolution"
            )
    index = index_tfrecords(files)

    def read(i: int) -> tuple[np.ndarray, int]:
        record = read_record(index, i, verify_crc=verify_crc)
        return read_image_example(record, f"{index.files[index.file_ids[i]]} record {i}")

    return target.lazy(len(index), read, None)
