"""2-D toy distributions made in code, each ``make(rng, n) -> [n, 2]`` of about unit std (so one
set of SDE hyperparameters suits them all)."""

from __future__ import annotations

import math

import numpy as np

from scoresde_jax.core.gmm import GaussianMixture

# Eight components on a circle with unequal weights, so a sampler that loses the weights shows it.
_ANGLES = np.arange(8) * (2 * math.pi / 8)
TOY_GMM = GaussianMixture.isotropic(
    weights=np.array([1, 1, 2, 2, 3, 3, 4, 4], np.float64) / 20,
    means=1.5 * np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=-1),
    stds=0.12,
)


def _gmm(rng: np.random.Generator, n: int) -> np.ndarray:
    k = rng.choice(TOY_GMM.num_components, size=n, p=TOY_GMM.weights)
    chol = np.linalg.cholesky(TOY_GMM.covs)
    z = rng.standard_normal((n, 2))
    return TOY_GMM.means[k] + np.einsum("nij,nj->ni", chol[k], z)


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    n1 = n // 2
    a = rng.uniform(0, math.pi, n)
    outer = np.stack([np.cos(a[:n1]), np.sin(a[:n1])], -1)
    inner = np.stack([1 - np.cos(a[n1:]), 0.5 - np.sin(a[n1:])], -1)
    x = np.concatenate([outer, inner]) + 0.05 * rng.standard_normal((n, 2))
    # Centre and scale to about unit std (the raw moons span [-1, 2] x [-0.5, 1]).
    return (x - np.array([0.5, 0.25])) / np.array([0.87, 0.5])


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    # Uniform on the 8 dark squares of a 4x4 board on [-2, 2]^2 (density 1/8 there).
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2.0 - 2.0
    x2 = x2 + (np.floor(x1) % 2)
    return np.stack([x1, x2], -1)


def _swissroll(rng: np.random.Generator, n: int) -> np.ndarray:
    t = 1.5 * math.pi * (1 + 2 * rng.uniform(size=n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], -1) + 0.5 * rng.standard_normal((n, 2))
    return x / 7.0


TOY_DATASETS = {
    "gmm": _gmm,
    "moons": _moons,
    "checkerboard": _checkerboard,
    "swissroll": _swissroll,
}


def make_toy_dataset(name: str, n: int, seed: int) -> np.ndarray:
    """Draws ``n`` points ``[n, 2]`` (float32) of the named toy distribution with a fixed seed."""
    if name not in TOY_DATASETS:
        raise ValueError(f"Unknown toy dataset {name!r}; choose one of {sorted(TOY_DATASETS)}.")
    return TOY_DATASETS[name](np.random.default_rng(seed), n).astype(np.float32)


def toy_density(name: str, x: np.ndarray) -> np.ndarray | None:
    """Exact log-density of a toy dataset where it is known in closed form, else ``None``."""
    if name == "gmm":
        return np.asarray(TOY_GMM.logpdf(np.asarray(x, np.float32)))
    if name == "checkerboard":
        inside = (np.abs(x) <= 2).all(-1) & ((np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2 == 0)
        return np.where(inside, -math.log(8.0), -np.inf)
    return None
