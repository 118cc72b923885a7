"""Pictures of 2-D toy models and labelled image grids as PNG files, for ``--mode toy_figures``
and the latent modes (``encode``, ``interpolate``, ``temperature``)."""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from PIL import Image

# images selects the Agg backend before it imports pyplot.
from scoresde_jax.io.images import image_grid, plt, square_axes, square_limit

# Data drawn in gray under what a figure is about.
_DATA_STYLE = dict(s=2, c="0.65", alpha=0.35, linewidths=0)


def _save(fig, path: str, dpi: int = 100) -> str:
    """Writes the figure as a 256-color PNG (a third of the size of full color, same look)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
            path, optimize=True
        )
    return path


def _save_titled(fig, path: str, title: str) -> str:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def labeled_image_grid(
    path: str, images: np.ndarray, row_labels: list[str], title: str = "", scale: float = 0.5
) -> str:
    """Writes ``[R, C, H, W, ch]`` uint8 images as a grid with one label per row, ``scale``
    inches per image."""
    images = np.asarray(images)
    if images.ndim != 5 or len(row_labels) != images.shape[0]:
        raise ValueError(
            f"need images [R, C, H, W, ch] and R row labels, got {images.shape}, {len(row_labels)}"
        )
    r, c, h, w, ch = images.shape
    pad = 2
    grid = image_grid(images.reshape(r * c, h, w, ch), ncol=c, pad=pad)
    fig, ax = plt.subplots(figsize=(c * scale + 1.0, r * scale * h / w + (0.4 if title else 0.1)))
    ax.imshow(grid[..., 0] if ch == 1 else grid, cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(r)], row_labels)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    return _save(fig, path, dpi=120)


def plot_toy_encoding(
    path: str,
    *,
    data: np.ndarray,
    latents: np.ndarray,
    reconstructions: np.ndarray,
    prior_std: float,
    title: str = "",
) -> str:
    """Three scatter panels: the encoded data, its latents over the prior, the reconstructions."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    lim = square_limit(data)
    axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5, linewidths=0)
    square_axes(axes[0], lim, f"data (n={len(data)})")
    ax = axes[1]
    ax.scatter(latents[:, 0], latents[:, 1], s=2, alpha=0.5, linewidths=0, c="C1")
    angle = np.linspace(0, 2 * math.pi, 200)
    for k in (1, 2, 3):
        ax.plot(k * prior_std * np.cos(angle), k * prior_std * np.sin(angle), "k--", lw=0.7)
    square_axes(ax, 3.6 * prior_std, f"latents at T (dashed: prior 1, 2, 3 std = {prior_std:g})")
    axes[2].scatter(data[:, 0], data[:, 1], **_DATA_STYLE)
    axes[2].scatter(reconstructions[:, 0], reconstructions[:, 1], s=2, linewidths=0, c="C2")
    square_axes(axes[2], lim, "decoded latents (gray: data)")
    return _save_titled(fig, path, title)


def plot_toy_interpolation(
    path: str,
    *,
    data: np.ndarray,
    paths: np.ndarray,
    latent_paths: np.ndarray,
    endpoints: tuple[np.ndarray, np.ndarray],
    prior_samples: np.ndarray,
    title: str = "",
) -> str:
    """Interpolation paths ``[P, num, 2]`` over the data; their great circles in latent space."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    ax = axes[0]
    ax.scatter(data[:, 0], data[:, 1], **_DATA_STYLE)
    x0, x1 = endpoints
    for i in range(len(paths)):
        color = f"C{i % 10}"
        ax.plot([x0[i, 0], x1[i, 0]], [x0[i, 1], x1[i, 1]], ":", color=color, lw=0.8)
        ax.plot(paths[i, :, 0], paths[i, :, 1], "-", color=color, lw=1.3)
        ax.scatter(paths[i, :, 0], paths[i, :, 1], s=6, color=color, zorder=3)
        ax.scatter([x0[i, 0], x1[i, 0]], [x0[i, 1], x1[i, 1]], s=40, marker="x", color="k")
    square_axes(ax, square_limit(data), "decoded interpolants (x: inputs, dotted: straight line)")
    ax = axes[1]
    ax.scatter(prior_samples[:, 0], prior_samples[:, 1], **_DATA_STYLE)
    for i in range(len(latent_paths)):
        ax.plot(latent_paths[i, :, 0], latent_paths[i, :, 1], "-", color=f"C{i % 10}", lw=1.3)
        ax.scatter(latent_paths[i, [0, -1], 0], latent_paths[i, [0, -1], 1], s=20, color="k")
    square_axes(
        ax,
        square_limit(np.concatenate([prior_samples, latent_paths.reshape(-1, 2)])),
        "slerp in latent space (gray: prior samples)",
    )
    return _save_titled(fig, path, title)


def plot_toy_temperature(
    path: str, *, data: np.ndarray, samples: dict[float, np.ndarray], title: str = ""
) -> str:
    """One scatter panel of samples per temperature, over the data."""
    n = len(samples)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.6), squeeze=False)
    lim = square_limit(data)
    for ax, (tau, x) in zip(axes[0], samples.items(), strict=True):
        ax.scatter(data[:, 0], data[:, 1], **_DATA_STYLE)
        ax.scatter(x[:, 0], x[:, 1], s=2, linewidths=0, c="C3", alpha=0.7)
        square_axes(ax, lim, f"temperature {tau:g}")
    return _save_titled(fig, path, title)


def plot_score_fields(
    path: str,
    *,
    times: list[float],
    grid: np.ndarray,
    log_density: np.ndarray,
    arrows_xy: np.ndarray,
    learned: np.ndarray,
    exact: np.ndarray | None,
    error: np.ndarray | None,
    density_label: str,
    title: str = "",
) -> str:
    """Score fields at ``times [K]`` (columns) over the log-density, with the error where known.

    ``grid [G]``: both axes of the density grid; ``log_density`` and ``error`` (``sigma_t
    |s_theta - s|`` or None) ``[K, G, G]`` (rows: second coordinate); ``learned``, ``exact`` (or
    None): ``[K, A, 2]`` fields times ``sigma_t`` at ``arrows_xy [A, 2]``.
    """
    k = len(times)
    rows = 1 if exact is None else 3
    extra = 0 if error is None else 1
    fig = plt.figure(figsize=(2.9 * k + 3.2 * extra, 2.9 * rows + 0.6), layout="constrained")
    gs = fig.add_gridspec(rows, k + extra, width_ratios=[1] * k + [1.1] * extra)
    lim = float(grid[-1])
    on_grid = dict(origin="lower", extent=(grid[0], grid[-1], grid[0], grid[-1]))
    arrows = dict(angles="xy", scale_units="xy", scale=1 / (0.08 * lim), width=0.005)

    def panel(r, j):
        ax = fig.add_subplot(gs[r, j])
        square_axes(ax, lim)
        ax.set(xticks=[], yticks=[])
        return ax

    fields = [(r"learned $\sigma_t\, s_\theta(x, t)$", learned, "C0")]
    if exact is not None:
        fields.append((r"exact $\sigma_t \nabla \log p_t(x)$", exact, "C2"))
    for r, (name, field, color) in enumerate(fields):
        for j, t in enumerate(times):
            ax = panel(r, j)
            ld = log_density[j]
            ax.imshow(np.clip(ld, ld.max() - 12, None), cmap="Greys", alpha=0.6, **on_grid)
            ax.quiver(*arrows_xy.T, *field[j].T, color=color, **arrows)
            if r == 0:
                ax.set_title(f"t = {t:g}")
            if j == 0:
                ax.set_ylabel(name)
    if error is not None:
        norm = LogNorm(vmin=1e-3, vmax=max(float(error.max()), 1e-2))
        for j in range(k):
            ax = panel(2, j)
            im = ax.imshow(np.maximum(error[j], 1e-3), cmap="magma", norm=norm, **on_grid)
            levels = log_density[j].max() - np.array([9.2, 4.6, 1.0])
            ax.contour(grid, grid, log_density[j], levels=levels, colors="w", linewidths=0.6)
            if j == 0:
                ax.set_ylabel(r"error $\sigma_t |s_\theta - \nabla \log p_t|$")
        fig.colorbar(im, ax=fig.axes[-k:], shrink=0.9, pad=0.01)
        ax = fig.add_subplot(gs[:, k])
        rel = np.linspace(-14, 0, 15)
        for j, t in enumerate(times):
            ld = (log_density[j] - log_density[j].max()) / math.log(10)
            centers, means = [], []
            for lo, hi in zip(rel[:-1], rel[1:], strict=True):
                sel = (ld >= lo) & (ld < hi)
                if sel.sum() >= 5:
                    centers.append(0.5 * (lo + hi))
                    means.append(float(error[j][sel].mean()))
            ax.plot(centers, means, "o-", ms=3, label=f"t = {t:g}")
        ax.set(yscale="log", title="error against density")
        ax.set_xlabel(r"$\log_{10}\, p_t(x) / \max\, p_t$  (left: low density)")
        ax.set_ylabel(r"mean error $\sigma_t |s_\theta - \nabla \log p_t|$")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    caption = f"gray: log p_t ({density_label})"
    if error is not None:
        caption += "; white contours: p_t at 1e-4, 1e-2 and 0.37 of its maximum"
    fig.suptitle(f"{title}\n{caption}" if title else caption, fontsize=10)
    return _save(fig, path, dpi=80)


def plot_trajectories(
    path: str,
    *,
    data: np.ndarray,
    sde_ts: np.ndarray,
    sde_xs: np.ndarray,
    ode_ts: np.ndarray,
    ode_xs: np.ndarray,
    title: str = "",
) -> str:
    """Reverse-SDE and probability-flow paths ``[S, B, 2]`` from the same starts over the data,
    and their first coordinate against time; SDE paths drawn at most 150 segments each (exact
    endpoints)."""
    stride = max(1, (len(sde_ts) - 1) // 150)
    keep = np.unique(np.r_[np.arange(0, len(sde_ts), stride), len(sde_ts) - 1])
    sde_ts, sde_xs_drawn = sde_ts[keep], sde_xs[keep]
    fig, axes = plt.subplots(
        1, 3, figsize=(15, 5.2), width_ratios=[1, 1, 1.15], layout="constrained"
    )
    lim = max(square_limit(data), float(np.abs(sde_xs[0]).max()) * 1.05)
    for ax, ts, xs, name in (
        (axes[0], sde_ts, sde_xs_drawn, "reverse SDE (Euler-Maruyama)"),
        (axes[1], ode_ts, ode_xs, "probability-flow ODE"),
    ):
        ax.scatter(data[:, 0], data[:, 1], **_DATA_STYLE)
        # Segments [S-1, B, 2, 2], colored by the time at their middle.
        segs = np.transpose(np.stack([xs[:-1], xs[1:]], axis=2), (1, 0, 2, 3)).reshape(-1, 2, 2)
        lc = LineCollection(segs, cmap="viridis", linewidths=0.8, alpha=0.8)
        lc.set_array(np.tile(0.5 * (ts[:-1] + ts[1:]), xs.shape[1]))
        lc.set_clim(float(ts.min()), float(ts.max()))
        ax.add_collection(lc)
        ax.scatter(xs[0, :, 0], xs[0, :, 1], s=28, facecolors="none", edgecolors="k", lw=0.9)
        ax.scatter(xs[-1, :, 0], xs[-1, :, 1], s=16, c="C3", zorder=3)
        square_axes(ax, lim, name)
    fig.colorbar(lc, ax=axes[:2], shrink=0.85, pad=0.01, label="t")
    ax = axes[2]
    for i in range(sde_xs.shape[1]):
        ax.plot(sde_ts, sde_xs_drawn[:, i, 0], color="0.55", lw=0.5, alpha=0.6)
        ax.plot(ode_ts, ode_xs[:, i, 0], color=plt.get_cmap("tab10")(i % 10), lw=1.3)
    ax.set(xlim=(float(sde_ts.max()), 0), xlabel="t (from T to 0)", ylabel="first coordinate")
    ax.set_title("over time: SDE (gray) and ODE (color)")
    ax.grid(alpha=0.3)
    caption = "black circles: the common starts at t = T; red: the ends"
    fig.suptitle(f"{title}\n{caption}" if title else caption, fontsize=10)
    return _save(fig, path, dpi=80)
