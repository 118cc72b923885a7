"""Network preconditioning and the EDM training loss (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models", Table 1 and Sec. 5).

A raw network ``F(x_in, c_noise)`` becomes a denoiser ``D(x; sigma) = c_skip(sigma) x + c_out(sigma)
F(c_in(sigma) x, c_noise(sigma))`` of ``x = y + sigma n`` (data ``y``, ``n ~ N(0, I)``), with the
coefficients of one of Table 1's columns:

========= ========= ==================== ===================== ================
kind      c_skip    c_out                c_in                  c_noise
========= ========= ==================== ===================== ================
``vp``    1         -sigma               1 / sqrt(sigma^2 + 1) (M - 1) t(sigma)
``ve``    1         sigma                1                     log(sigma / 2)
``edm``   sd^2 / s2 sigma sd / sqrt(s2)  1 / sqrt(s2)          log(sigma) / 4
========= ========= ==================== ===================== ================

(``sd = sigma_data``, ``s2 = sigma^2 + sigma_data^2``; VP's ``t(sigma)`` inverts ``sigma(t) =
sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)``.) Every SDE of the package writes ``x_t = s(t) (y +
sigma(t) n)``, so the denoiser gives every sampler and the likelihood a score, :func:`score_fn`:
``score(x_t, t) = (s D(x_t / s; sigma) - x_t) / (s^2 sigma^2)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.core.sde import SDE, ScoreFn, batch_mul

KINDS = ("vp", "ve", "edm")

# F(x_in [B, ...], c_noise [B]) -> [B, ...]: the raw network, as the package's model functions.
NetFn = Callable[[jax.Array, jax.Array], jax.Array]
Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Preconditioning:
    """One column of Table 1. ``sigma_data`` (EDM; 0.5 for data in [-1, 1]); VP's ``beta_min``,
    ``beta_d`` and ``M`` (0.1, 19.9, 1000: the DDPM++ schedule of the paper's VP column)."""

    kind: str = "edm"
    sigma_data: float = 0.5
    beta_min: float = 0.1
    beta_d: float = 19.9
    M: int = 1000

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown preconditioning {self.kind!r}; choose one of {list(KINDS)}.")
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {self.sigma_data}")

    def coefficients(self, sigma: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """``(c_skip, c_out, c_in, c_noise)``, each shaped like ``sigma``."""
        sigma = jnp.asarray(sigma)
        one = jnp.ones_like(sigma)
        if self.kind == "vp":
            return one, -sigma, jax.lax.rsqrt(sigma**2 + 1), (self.M - 1) * self.vp_time(sigma)
        if self.kind == "ve":
            return one, sigma, one, jnp.log(0.5 * sigma)
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        return (
            sd2 / total,
            sigma * self.sigma_data * jax.lax.rsqrt(total),
            jax.lax.rsqrt(total),
            0.25 * jnp.log(sigma),
        )

    def vp_time(self, sigma: jax.Array) -> jax.Array:
        """VP's ``t(sigma)``: the root of ``beta_d t^2 / 2 + beta_min t = log(1 + sigma^2)``."""
        b, d = self.beta_min, self.beta_d
        return (jnp.sqrt(b**2 + 2 * d * jnp.log1p(sigma**2)) - b) / d

    def noise_level_of_label(self, c_noise: jax.Array) -> jax.Array:
        """The ``sigma`` whose ``c_noise`` this is (the inverse of the last coefficient)."""
        c_noise = jnp.asarray(c_noise)
        if self.kind == "vp":
            t = c_noise / (self.M - 1)
            return jnp.sqrt(jnp.expm1(0.5 * self.beta_d * t**2 + self.beta_min * t))
        if self.kind == "ve":
            return 2 * jnp.exp(c_noise)
        return jnp.exp(4 * c_noise)

    def loss_weight(self, sigma: jax.Array) -> jax.Array:
        """``lambda(sigma)``: ``1 / sigma^2`` (VP, VE); EDM ``(sigma^2 + sd^2) / (sigma sd)^2``,
        which makes ``lambda c_out^2 = 1``."""
        if self.kind == "edm":
            return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return 1 / sigma**2


def denoiser(precond: Preconditioning, net_fn: NetFn) -> Denoiser:
    """``D(x [B, ...], sigma [B])`` of the raw network ``net_fn``."""

    def denoise(x, sigma):
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
        c_skip, c_out, c_in, c_noise = precond.coefficients(sigma)
        out = net_fn(batch_mul(c_in, x), c_noise)
        return batch_mul(c_skip, x) + batch_mul(c_out, out)

    return denoise


def score_fn(sde: SDE, denoise: Denoiser) -> ScoreFn:
    """The score of ``sde``'s marginal ``p_t`` from a denoiser of ``y + sigma n``: with ``sigma =
    sigma(t)`` and ``s = s(t)``, ``(s D(x / s; sigma) - x) / (s^2 sigma^2)``."""

    def score(x, t):
        sigma = sde.noise_level(t)
        s = sde.scale_of_noise_level(sigma)
        d = denoise(batch_mul(1 / s, x), sigma)
        return batch_mul(1 / (s * sigma**2), d - batch_mul(1 / s, x))

    return score


@dataclasses.dataclass(frozen=True)
class NoiseDistribution:
    """Training noise levels (Table 1, "Training"): ``"edm"`` log-normal, ``log sigma ~
    N(p_mean, p_std^2)``; ``"ve"`` log-uniform on ``[sigma_min, sigma_max]``; ``"vp"`` ``sigma(t)``
    for ``t ~ U(eps_t, 1)``."""

    kind: str = "edm"
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_min: float = 0.02
    sigma_max: float = 100.0
    eps_t: float = 1e-5

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown noise distribution {self.kind!r}; choose one of {KINDS}.")

    def sample(self, key: jax.Array, n: int, precond: Preconditioning) -> jax.Array:
        if self.kind == "edm":
            return jnp.exp(self.p_mean + self.p_std * jax.random.normal(key, (n,)))
        if self.kind == "ve":
            lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
            return jnp.exp(jax.random.uniform(key, (n,), minval=lo, maxval=hi))
        t = jax.random.uniform(key, (n,), minval=self.eps_t, maxval=1.0)
        b, d = precond.beta_min, precond.beta_d
        return jnp.sqrt(jnp.expm1(0.5 * d * t**2 + b * t))


def denoising_loss(
    precond: Preconditioning,
    noise: NoiseDistribution,
    denoise: Denoiser,
    y: jax.Array,
    key: jax.Array,
) -> jax.Array:
    """Per-example EDM loss ``[B]``: ``lambda(sigma) mean ||D(y + sigma n; sigma) - y||^2`` over
    the data dimensions, with ``sigma`` drawn from ``noise`` (Karras et al. 2022, Eq. 8)."""
    sigma_key, noise_key = jax.random.split(key)
    sigma = noise.sample(sigma_key, y.shape[0], precond).astype(y.dtype)
    x = y + batch_mul(sigma, jax.random.normal(noise_key, y.shape, y.dtype))
    sq = jnp.mean(((denoise(x, sigma) - y) ** 2).reshape(y.shape[0], -1), axis=-1)
    return precond.loss_weight(sigma) * sq
