"""Image grids and 2-D sample scatter plots, written as PNG files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def square_limit(points: np.ndarray, q: float = 0.995, margin: float = 1.25) -> float:
    return float(np.quantile(np.abs(points), q)) * margin


def square_axes(ax, lim: float, title: str = "") -> None:
    """Square axes ``[-lim, lim]^2``, titled if ``title``."""
    if title:
        ax.set_title(title)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")


def scatter_samples(
    path: str, *, data: np.ndarray, samples: np.ndarray, title: str = "", lim: float | None = None
) -> str:
    """Writes a PNG with data (left) and model samples (right) on identical axes."""
    data, samples = np.asarray(data), np.asarray(samples)
    lim = square_limit(data) if lim is None else lim
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, pts, name in ((axes[0], data, "data"), (axes[1], samples, "samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5, linewidths=0)
        square_axes(ax, lim, f"{name} (n={len(pts)})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles ``[N, H, W, C]`` uint8 images into one ``[H', W', C]`` image with ``pad`` pixels."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"image_grid needs uint8 [N, H, W, C], got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def save_image_grid(path: str, images: np.ndarray, ncol: int | None = None) -> str:
    """Writes ``[N, H, W, C]`` uint8 images as one PNG grid."""
    grid = image_grid(images, ncol)
    plt.imsave(path, grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    return path


def to_uint8(x: np.ndarray, *, centered: bool) -> np.ndarray:
    """Model-space images (``[-1, 1]`` if ``centered`` else ``[0, 1]``) -> uint8 ``[0, 255]``."""
    x = (np.asarray(x, np.float32) + 1) / 2 if centered else np.asarray(x, np.float32)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
