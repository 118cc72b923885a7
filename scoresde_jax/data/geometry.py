"""uint8 images brought to ``image_size x image_size x C`` by the paper's input pipelines (resize;
CelebA crop 140 and resize; smaller side resized and cropped; FFHQ/CelebA-HQ never resized)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from PIL import Image

from scoresde_jax.errors import DataError


def convert_channels(images: np.ndarray, num_channels: int) -> np.ndarray:
    """Gray -> RGB repeats the channel; RGB -> gray is the rounded ITU-R 601 luma (PIL's "L")."""
    c = images.shape[-1]
    if c == num_channels:
        return images
    if c == 1 and num_channels == 3:
        return np.repeat(images, 3, axis=-1)
    if c == 3 and num_channels == 1:
        # Integer arithmetic keeps the weights exact and avoids a float copy of a whole dataset.
        x = images.astype(np.uint32)
        luma = (299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2] + 500) // 1000
        return luma.astype(np.uint8)[..., None]
    raise DataError(
        f"cannot convert images with {c} channels to {num_channels}; supported are 1 -> 3 "
        "(repeat) and 3 -> 1 (luma); set config.data.num_channels to 1 or 3"
    )


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a uint8 ``[H, W, C]`` image. PIL widens the filter when shrinking, so
    downsampling is antialiased like the paper's ``tf.image.resize(..., antialias=True)``."""
    if image.shape[:2] == (height, width):
        return image
    # One 8-bit plane at a time works for any channel count with identical results to RGB mode.
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c])).resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(planes, axis=-1)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` window (offsets rounded down, as in score_sde)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise DataError(f"cannot center-crop {size}x{size} from an image of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def resize_small(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes so the smaller side is ``size``, keeping the aspect ratio."""
    h, w = image.shape[:2]
    if h <= w:
        return resize(image, size, max(size, round(w * size / h)))
    return resize(image, max(size, round(h * size / w)), size)


def _refuse(image: np.ndarray, size: int) -> np.ndarray:
    raise DataError(
        f"image is {image.shape[0]}x{image.shape[1]} but config.data.image_size={size}; this "
        "dataset is not resized: use the files of that resolution (e.g. ffhq-r08.tfrecords for "
        "256) or set image_size to the resolution of the data"
    )


class Geometry(NamedTuple):
    fit: Callable[[np.ndarray, int], np.ndarray]  # (image, size) -> size x size image
    text: str  # what it does, for the log


GEOMETRIES: dict[str, Geometry] = {
    "resize": Geometry(lambda image, size: resize(image, size, size), "bilinear resize"),
    # score_sde's CelebA: the central 140x140 face region of the 178x218 aligned images.
    "celeba": Geometry(
        lambda image, size: resize(center_crop(image, 140), size, size),
        "center crop 140x140, bilinear resize",
    ),
    "resize_small_crop": Geometry(
        lambda image, size: center_crop(resize_small(image, size), size),
        "smaller side resized, center crop",
    ),
    "exact": Geometry(_refuse, "refused (this dataset is never resized)"),
}


def prepare_image(
    image: np.ndarray, *, image_size: int, num_channels: int, geometry: str
) -> np.ndarray:
    """One uint8 image -> ``[image_size, image_size, num_channels]``: channels first (fewer planes
    to resize when going to gray), then the geometry unless it has the target size."""
    if image.ndim == 2:
        image = image[..., None]
    image = convert_channels(image, num_channels)
    if image.shape[:2] == (image_size, image_size):
        return image
    return GEOMETRIES[geometry].fit(image, image_size)


def prepare_images(
    images: np.ndarray, *, image_size: int, num_channels: int, geometry: str
) -> np.ndarray:
    """:func:`prepare_image` of every image of a uint8 ``[N, H, W, C]`` array."""
    images = convert_channels(images, num_channels)
    if images.shape[1:3] == (image_size, image_size):
        return images
    out = np.empty((len(images), image_size, image_size, num_channels), np.uint8)
    for i, image in enumerate(images):
        out[i] = GEOMETRIES[geometry].fit(image, image_size)
    return out


def describe_conversion(
    native_shape, *, image_size: int, num_channels: int, geometry: str
) -> str | None:
    """What :func:`prepare_image` does to an image of ``native_shape`` (``None``: nothing)."""
    h, w, c = native_shape
    steps = []
    if c != num_channels:
        steps.append("RGB -> gray (ITU-R 601 luma)" if c == 3 else "gray -> RGB (channel repeated)")
    if (h, w) != (image_size, image_size):
        steps.append(f"{GEOMETRIES[geometry].text} {h}x{w} -> {image_size}x{image_size}")
    return "; ".join(steps) or None
