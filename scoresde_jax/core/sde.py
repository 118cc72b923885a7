"""Forward SDEs of Song et al. (2021), "Score-Based Generative Modeling through SDEs" (Sec. 3.4,
App. B): VE ``dx = sqrt(d[sigma^2]/dt) dw``, VP ``dx = -1/2 beta x dt + sqrt(beta) dw`` and sub-VP
``dx = -1/2 beta x dt + sqrt(beta (1 - exp(-2 int_0^t beta))) dw``. An SDE is a frozen, hashable
dataclass (usable as a static ``jax.jit`` argument); ``x`` is ``[B, ...]``, ``t`` is ``[B]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def batch_mul(v: jax.Array, x: jax.Array) -> jax.Array:
    """Multiplies a per-example vector ``v: [B]`` into ``x: [B, ...]``."""
    v = jnp.asarray(v)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)) * x


def _time_index(t: jax.Array, N: int, T: float) -> jax.Array:
    # As in the original code, t maps to floor(t (N - 1) / T). The samplers' grid linspace(T, eps,
    # N) stays clear of the integers, so the floor is robust there; t = i / (N - 1) may round down.
    return jnp.clip((t * (N - 1) / T).astype(jnp.int32), 0, N - 1)


def _xp(x):
    """numpy for host numbers (static grids stay float64, even under ``jax.jit``), else jnp."""
    return np if isinstance(x, int | float | np.ndarray | np.generic) else jnp


class SDEBase:
    """Shared methods. A subclass defines ``drift_diffusion``, ``marginal_coeffs(t) -> (alpha_t,
    sigma_t)``, ``time_labels``, ``score_from_output`` and, for ``x_t = s(t) (x_0 + sigma(t) z)``
    (Karras et al. 2022, Eq. 4), ``noise_level``, ``scale_of_noise_level``, ``marginal_std = s
    sigma`` and their inverses in closed form (host numbers answer in float64)."""

    N: int
    T: float
    name: ClassVar[str]
    title: ClassVar[str] = "SDE"
    prior_std: ClassVar[float] = 1.0
    # Whether discretize and ancestral_step follow the SDE's own discrete chain (SMLD, DDPM)
    # rather than Euler--Maruyama and the continuous posterior.
    discrete_chain: ClassVar[bool] = False
    # The largest DDPM beta the discrete steps use (must stay below 1); 0 without betas.
    max_discrete_beta: ClassVar[float] = 0.0

    def __post_init__(self):
        if self.N < 1 or self.T <= 0:
            raise ValueError(
                f"{type(self).__name__} needs N >= 1 and T > 0, got N={self.N}, T={self.T}"
            )

    def marginal_prob(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean ``[B, ...]`` and std ``[B]`` of the perturbation kernel ``p_0t(x_t | x_0 = x)``."""
        alpha, sigma = self.marginal_coeffs(t)
        return batch_mul(alpha, x), sigma

    def prior_sample(self, key: jax.Array, shape) -> jax.Array:
        """Samples ``x_T`` from the prior ``N(0, prior_std^2 I)``."""
        return self.prior_std * jax.random.normal(key, shape)

    def prior_logp(self, z: jax.Array) -> jax.Array:
        """Log-density ``[B]`` of the prior (summed over the non-batch dims)."""
        var, d = self.prior_std**2, math.prod(z.shape[1:])
        sq = jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=-1)
        return -0.5 * d * math.log(2 * math.pi * var) - 0.5 * sq / var

    def discretize(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(f_i, G_i)`` of a forward step ``x_{i+1} = x_i + f_i + G_i z`` (Euler--Maruyama)."""
        dt = self.T / self.N
        drift, diffusion = self.drift_diffusion(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def discrete_alpha(self, t: jax.Array) -> jax.Array:
        """``alpha_i = 1 - beta_i`` at ``t`` (paper, Algorithm 5); 1 without betas (Algorithm 4)."""
        return jnp.ones_like(t)

    def discrete_marginal(self, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Scale and std ``[B]`` of ``x_i | x_0`` for discrete labels ``i`` (SMLD: label 0 is
        ``sigma_max``, as in NCSN)."""
        raise ValueError(
            f"The {self.title} has no discrete (SMLD/DDPM) noise levels; set "
            "training.continuous=True."
        )

    def ancestral_step(
        self, score: jax.Array, x: jax.Array, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Mean and std of one ancestral step from ``t``: the :func:`gaussian_posterior` at
        ``max(t - T/N, 0)`` (the original code has none for sub-VP)."""
        s = jnp.maximum(t - self.T / self.N, 0.0)
        return gaussian_posterior(self, score, x, t, s)

    def log_snr(self, t):
        """``log(s^2 / std^2) = -2 log sigma(t)``."""
        return -2 * _xp(t).log(self.noise_level(t))


@dataclasses.dataclass(frozen=True)
class VESDE(SDEBase):
    """Variance-exploding SDE, ``sigma(t) = s_min (s_max / s_min)^(t/T)``; as in the paper the
    kernel is ``N(x_0, sigma(t)^2 I)`` (exact for data already perturbed by ``sigma_min``)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000
    T: float = 1.0
    name: ClassVar[str] = "vesde"
    title: ClassVar[str] = "VE SDE"
    discrete_chain: ClassVar[bool] = True

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"VESDE needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )
        super().__post_init__()

    @property
    def prior_std(self) -> float:  # type: ignore[override]
        return self.sigma_max

    def sigma(self, t: jax.Array) -> jax.Array:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** (t / self.T)

    noise_level = marginal_std = sigma

    @property
    def discrete_sigmas(self) -> jax.Array:
        """The SMLD noise levels ``sigma_1 < ... < sigma_N`` (geometric, ascending)."""
        return jnp.exp(jnp.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N))

    def drift_diffusion(self, x, t):
        rate = math.sqrt(2 * math.log(self.sigma_max / self.sigma_min) / self.T)
        return jnp.zeros_like(x), self.sigma(t) * rate

    def marginal_coeffs(self, t):
        return jnp.ones_like(t), self.sigma(t)

    def time_of_noise_level(self, sigma):
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        return self.T * _xp(sigma).log(sigma / self.sigma_min) / log_ratio

    time_of_marginal_std = time_of_noise_level

    def scale_of_noise_level(self, sigma):
        return _xp(sigma).ones_like(sigma)

    def time_labels(self, t, *, continuous):
        # NCSN++ (continuous) embeds sigma(t); NCSN / NCSNv2 index their levels, largest first.
        if continuous:
            return self.sigma(t)
        return jnp.round((self.T - t) / self.T * (self.N - 1)).astype(jnp.int32)

    def score_from_output(self, out, t, labels, *, continuous):
        return out  # SMLD networks output the score itself

    def _sigma_and_previous(self, t):
        """``(sigma_i, sigma_{i-1})`` of the SMLD levels at ``t``, with ``sigma_{-1} = 0``."""
        idx = _time_index(t, self.N, self.T)
        sigmas = self.discrete_sigmas
        return sigmas[idx], jnp.where(idx == 0, 0.0, sigmas[jnp.maximum(idx - 1, 0)])

    def discrete_marginal(self, labels):
        std = jnp.flip(self.discrete_sigmas)[labels]
        return jnp.ones_like(std), std

    def importance_sample_t(self, key, shape, eps=1e-5):
        # g^2 / sigma^2 = 2 log(sigma_max / sigma_min) is constant: q is uniform.
        t = eps + jax.random.uniform(key, shape) * (self.T - eps)
        return t, jnp.ones_like(t)

    def discretize(self, x, t):
        """SMLD: ``x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z`` (paper, Eq. 8)."""
        sigma, prev = self._sigma_and_previous(t)
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - prev**2)

    def ancestral_step(self, score, x, t):
        """SMLD: ``mean = x + (sigma_i^2 - sigma_{i-1}^2) score``,
        ``std = sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2)``."""
        sigma, prev = self._sigma_and_previous(t)
        step = sigma**2 - prev**2
        return x + batch_mul(step, score), jnp.sqrt(prev**2 * step / sigma**2)


@dataclasses.dataclass(frozen=True)
class _BetaSDE(SDEBase):
    """VP and sub-VP: linear ``beta(t)``, DDPM's discrete betas (sub-VP's corrector uses them)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000
    T: float = 1.0

    def __post_init__(self):
        if not 0 <= self.beta_min <= self.beta_max or self.beta_max <= 0:
            raise ValueError(
                f"{type(self).__name__} needs 0 <= beta_min <= beta_max, beta_max > 0, "
                f"got {self.beta_min}, {self.beta_max}"
            )
        super().__post_init__()

    def beta(self, t: jax.Array) -> jax.Array:
        return self.beta_min + t / self.T * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: jax.Array) -> jax.Array:
        """``B(t) = int_0^t beta(s) ds``."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2 / self.T

    def time_of_integrated_beta(self, b: jax.Array) -> jax.Array:
        """Inverse of :meth:`integrated_beta` (written to avoid cancellation)."""
        slope = (self.beta_max - self.beta_min) / self.T
        return 2 * b / (self.beta_min + _xp(b).sqrt(self.beta_min**2 + 2 * slope * b))

    def importance_sample_t(self, key, shape, eps=1e-5):
        # Inverse-CDF sampling of q(t) ∝ g^2 / sigma^2 through F(B(t)) = int g^2 / sigma^2 dt.
        u = jax.random.uniform(key, shape)
        f_lo = self._weight_integral(self.integrated_beta(jnp.asarray(eps, jnp.float32)))
        f_hi = self._weight_integral(self.integrated_beta(jnp.asarray(self.T, jnp.float32)))
        t = self.time_of_integrated_beta(self._inverse_weight_integral(f_lo + u * (f_hi - f_lo)))
        t = jnp.clip(t, eps, self.T)
        return t, (f_hi - f_lo) / ((self.T - eps) * self._likelihood_factor(t))

    @property
    def max_discrete_beta(self) -> float:  # type: ignore[override]
        return self.beta_max / self.N

    def _discrete_beta(self, t):
        return self.discrete_betas[_time_index(t, self.N, self.T)]

    def discrete_alpha(self, t):
        return self.alphas[_time_index(t, self.N, self.T)]

    def time_labels(self, t, *, continuous):
        # DDPM++ and friends see 999 t; the discrete DDPM networks their step index (sub-VP has no
        # discrete chain: always 999 t).
        return t * 999 if continuous or not self.discrete_chain else t / self.T * (self.N - 1)

    def score_from_output(self, out, t, labels, *, continuous):
        if continuous or not self.discrete_chain:
            std = self.marginal_coeffs(t)[1]
        else:
            std = self.sqrt_1m_alphas_cumprod[labels.astype(jnp.int32)]
        return batch_mul(-1.0 / std, out)  # the network predicts the noise

    @property
    def discrete_betas(self) -> jax.Array:
        """DDPM's linear schedule ``beta_i = beta_min/N + i (beta_max - beta_min)/(N (N-1))``."""
        return jnp.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

    @property
    def alphas(self) -> jax.Array:
        return 1.0 - self.discrete_betas

    @property
    def alphas_cumprod(self) -> jax.Array:
        return jnp.cumprod(self.alphas)

    @property
    def sqrt_alphas_cumprod(self) -> jax.Array:
        return jnp.sqrt(self.alphas_cumprod)

    @property
    def sqrt_1m_alphas_cumprod(self) -> jax.Array:
        return jnp.sqrt(1.0 - self.alphas_cumprod)


@dataclasses.dataclass(frozen=True)
class VPSDE(_BetaSDE):
    """Variance-preserving SDE (the continuous limit of DDPM)."""

    name: ClassVar[str] = "vpsde"
    title: ClassVar[str] = "VP SDE"
    discrete_chain: ClassVar[bool] = True

    def discrete_marginal(self, labels):
        return self.sqrt_alphas_cumprod[labels], self.sqrt_1m_alphas_cumprod[labels]

    def drift_diffusion(self, x, t):
        beta = self.beta(t)
        return -0.5 * batch_mul(beta, x), jnp.sqrt(beta)

    def marginal_coeffs(self, t):
        log_mean = -0.5 * self.integrated_beta(t)
        return jnp.exp(log_mean), jnp.sqrt(-jnp.expm1(2 * log_mean))

    def noise_level(self, t):
        xp = _xp(t)
        return xp.sqrt(xp.expm1(self.integrated_beta(t)))

    def time_of_noise_level(self, sigma):
        return self.time_of_integrated_beta(_xp(sigma).log1p(sigma**2))

    def scale_of_noise_level(self, sigma):  # s^2 (1 + sigma^2) = 1
        return 1 / np.sqrt(1 + sigma**2) if _xp(sigma) is np else jax.lax.rsqrt(1 + sigma**2)

    def marginal_std(self, t):
        xp = _xp(t)
        return xp.sqrt(-xp.expm1(-self.integrated_beta(t)))

    def time_of_marginal_std(self, std):
        return self.time_of_integrated_beta(-_xp(std).log1p(-(std**2)))

    def discretize(self, x, t):
        """DDPM: ``x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z`` (paper, Eq. 10)."""
        beta = self._discrete_beta(t)
        return batch_mul(jnp.sqrt(1.0 - beta), x) - x, jnp.sqrt(beta)

    # F(B) = log(e^B - 1) = B + log(-expm1(-B));  F^{-1}(y) = softplus(y).
    def _weight_integral(self, b):
        return b + jnp.log(-jnp.expm1(-b))

    def _inverse_weight_integral(self, y):
        return jax.nn.softplus(y)

    def _likelihood_factor(self, t):
        return self.beta(t) / -jnp.expm1(-self.integrated_beta(t))

    def ancestral_step(self, score, x, t):
        """DDPM: ``mean = (x + beta_i score) / sqrt(1 - beta_i)``, ``std = sqrt(beta_i)``."""
        beta = self._discrete_beta(t)
        return batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score)), jnp.sqrt(beta)


@dataclasses.dataclass(frozen=True)
class SubVPSDE(_BetaSDE):
    """The sub-VP SDE (paper, Eq. 11): variance bounded by the VP SDE's at every t."""

    name: ClassVar[str] = "subvpsde"
    title: ClassVar[str] = "sub-VP SDE"

    def drift_diffusion(self, x, t):
        beta = self.beta(t)
        discount = -jnp.expm1(-2 * self.integrated_beta(t))
        return -0.5 * batch_mul(beta, x), jnp.sqrt(beta * discount)

    def marginal_coeffs(self, t):
        log_mean = -0.5 * self.integrated_beta(t)
        return jnp.exp(log_mean), -jnp.expm1(2 * log_mean)

    def noise_level(self, t):
        return 2 * _xp(t).sinh(0.5 * self.integrated_beta(t))

    def time_of_noise_level(self, sigma):
        return self.time_of_integrated_beta(2 * _xp(sigma).arcsinh(0.5 * sigma))

    def scale_of_noise_level(self, sigma):  # s^2 + sigma s - 1 = 0
        return 2 / (sigma + _xp(sigma).sqrt(sigma**2 + 4))

    def marginal_std(self, t):
        return -_xp(t).expm1(-self.integrated_beta(t))

    def time_of_marginal_std(self, std):
        return self.time_of_integrated_beta(-_xp(std).log1p(-std))

    # F(B) = log(2 cosh B - 2) = B + 2 log(-expm1(-B));  F^{-1}(y) = arccosh(1 + e^y / 2),
    # written as log1p(y' + sqrt(y' (y' + 2))) with y' = e^y / 2 to stay exact for small B.
    def _weight_integral(self, b):
        return b + 2 * jnp.log(-jnp.expm1(-b))

    def _inverse_weight_integral(self, y):
        h = 0.5 * jnp.exp(y)
        return jnp.log1p(h + jnp.sqrt(h * (h + 2)))

    def _likelihood_factor(self, t):
        b = self.integrated_beta(t)
        return self.beta(t) * (1 + jnp.exp(-b)) / -jnp.expm1(-b)


SDE = VESDE | VPSDE | SubVPSDE

SDES: dict[str, type] = {"vesde": VESDE, "vpsde": VPSDE, "subvpsde": SubVPSDE}
_ALIASES = {"ve": "vesde", "vp": "vpsde", "subvp": "subvpsde", "sub-vp": "subvpsde"}


def check_sde(sde, needed_by: str) -> None:
    """Raises ``TypeError`` unless ``sde`` is one of the package's SDEs (:data:`SDES`)."""
    if not isinstance(sde, SDEBase):
        raise TypeError(
            f"{needed_by} needs an SDE of scoresde_jax.core.sde ({', '.join(SDES)}), "
            f"got {type(sde).__name__}"
        )


def get_sde(name: str, **params) -> SDE:
    """An SDE by name (:data:`SDES` or an alias such as ``"vp"``) and fields (paper defaults)."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SDES:
        raise ValueError(f"Unknown SDE {name!r}; choose one of {sorted(SDES)}.")
    cls = SDES[key]
    fields = {f.name for f in dataclasses.fields(cls)}
    if unknown := set(params) - fields:
        raise ValueError(
            f"Unknown parameter(s) {sorted(unknown)} for {key}; valid ones are {sorted(fields)}."
        )
    return cls(**params)


def _reverse(f, g, score, probability_flow):
    coef = 0.5 if probability_flow else 1.0
    return f - coef * batch_mul(g**2, score), jnp.zeros_like(g) if probability_flow else g


def reverse_drift_diffusion(
    sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, probability_flow: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Drift ``f - g^2 score`` and diffusion ``g`` of the reverse-time SDE (paper, Eq. 6), or
    ``f - 1/2 g^2 score`` and 0 for the probability-flow ODE (Eq. 13); it runs from T to 0."""
    return _reverse(*sde.drift_diffusion(x, t), score_fn(x, t), probability_flow)


def probability_flow_drift(sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array) -> jax.Array:
    """``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)``: the probability-flow ODE (paper, Eq. 13)."""
    return reverse_drift_diffusion(sde, score_fn, x, t, probability_flow=True)[0]


def reverse_discretize(
    sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, probability_flow: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Reverse of :meth:`discretize`: ``rev_f = f - G^2 score`` (1/2 for the ODE), ``rev_G = G``
    (0 for the ODE); the paper's "reverse diffusion" discretization (Eq. 46)."""
    return _reverse(*sde.discretize(x, t), score_fn(x, t), probability_flow)


def gaussian_posterior(
    sde: SDE, score: jax.Array, x: jax.Array, t: jax.Array, s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and std ``[B]`` of ``p(x_s | x_t)``, ``s < t``, for the Gaussian chain ``x_t = a_ts x_s
    + sqrt(var_ts) z`` with the SDE's marginals and Tweedie's ``x0_hat``: ``a_ts = a_t / a_s``,
    ``var_ts = sig_t^2 - a_ts^2 sig_s^2``, mean ``(x_t + var_ts score) / a_ts`` (no division by
    ``sig_t^2``, tiny near 0 for sub-VP), ``var = var_ts sig_s^2 / sig_t^2``."""
    a_t, sig_t = sde.marginal_coeffs(t)
    a_s, sig_s = sde.marginal_coeffs(s)
    a_ts = a_t / a_s
    # Rounding can make the difference slightly negative when s and t are close.
    var_ts = jnp.maximum(sig_t**2 - a_ts**2 * sig_s**2, 0.0)
    mean = batch_mul(1.0 / a_ts, x + batch_mul(var_ts, score))
    std = jnp.sqrt(var_ts * sig_s**2 / sig_t**2)
    return mean, std


def importance_sample_t(
    sde: SDE, key: jax.Array, shape, eps: float = 1e-5
) -> tuple[jax.Array, jax.Array]:
    """``(t, w)``: ``t ~ q(t) ∝ g(t)^2 / sigma(t)^2`` on ``[eps, T]``, ``w = u(t) / q(t)``, which
    cuts the variance of likelihood weighting (Song et al. 2021, "Maximum likelihood training of
    score-based diffusion models", Sec. 5); each SDE inverts the CDF in closed form."""

    check_sde(sde, "importance_sample_t")
    return sde.importance_sample_t(key, shape, eps)
