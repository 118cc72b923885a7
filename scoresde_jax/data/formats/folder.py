"""A folder of png/jpg/jpeg/webp/bmp files (recursive), optionally split into train/ and test/;
labels from class sub-folders when every image sits in one. Decoded lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from scoresde_jax.data.formats.base import LazySource, Target, split_folder
from scoresde_jax.errors import MissingDataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def detect(path: Path) -> bool:
    return path.is_dir() and next(filter(_is_image, path.rglob("*")), None) is not None


def _decode(path: Path, label: int) -> tuple[np.ndarray, int]:
    with Image.open(path) as im:
        # Grayscale stays one channel (convert_channels widens it when asked); all else is RGB.
        mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
        if im.mode != mode:  # convert() copies even an image already in its mode
            im = im.convert(mode)
        return np.asarray(im), label


def open_split(path: Path, split: str, target: Target) -> LazySource:
    root = split_folder(path, split)
    files = sorted(
        (p for p in root.rglob("*") if _is_image(p) and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
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
    return target.lazy(len(files), lambda i: _decode(files[i], labels[i]), num_classes)
