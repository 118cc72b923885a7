"""``.npz`` files with ``{split}_images`` (uint8 NHWC) [+ ``{split}_labels``], or ``images`` [+
``labels``] for a single-split file; read into memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scoresde_jax.data.formats.base import ArraySource, Target
from scoresde_jax.errors import DataError


def detect(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npz"


def open_split(path: Path, split: str, target: Target) -> ArraySource:
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        if f"{split}_images" in keys:
            image_key, label_key = f"{split}_images", f"{split}_labels"
        elif "images" in keys:  # a single-split file serves whichever split is asked for
            image_key, label_key = "images", "labels"
        else:
            raise DataError(
                f"{path} has no array '{split}_images' (it has {sorted(keys)}); save one with "
                f"np.savez(path, {split}_images=uint8_nhwc, {split}_labels=int_labels), or "
                "'images'/'labels' for a single-split file"
            )
        images = f[image_key]
        labels = f[label_key] if label_key in keys else None
    return target.arrays(images, labels, f"{path}[{image_key}]")
