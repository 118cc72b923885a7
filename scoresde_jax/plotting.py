"""Pictures people look at: sample scatter plots for 2-D data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["scatter_samples"]


def scatter_samples(
    path: str, *, data: np.ndarray, samples: np.ndarray, title: str = "", lim: float | None = None
) -> str:
    """Writes a PNG with data (left) and model samples (right) on identical axes."""
    data, samples = np.asarray(data), np.asarray(samples)
    if lim is None:
        lim = float(np.quantile(np.abs(data), 0.995)) * 1.25
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, pts, name in ((axes[0], data, "data"), (axes[1], samples, "samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5, linewidths=0)
        ax.set_title(f"{name} (n={len(pts)})")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
