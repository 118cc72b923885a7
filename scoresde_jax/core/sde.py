"""Forward SDEs of Song et al. (2021), "Score-Based Generative Modeling through SDEs".

Each SDE is an immutable, hashable value (a frozen dataclass of Python numbers) whose methods are
pure functions of ``(x, t)``, so an SDE can be closed over or passed as a static argument to
``jax.jit``. ``x`` is a batch ``[B, ...]`` and ``t`` a vector ``[B]`` of times in ``[0, T]``.

The three SDEs (paper, Section 3.4 and Appendix B):

* VE (SMLD):   ``dx = sqrt(d[sigma^2(t)]/dt) dw``, ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``.
* VP (DDPM):   ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw``, ``beta(t) = b0 + t (b1 - b0)``.
* sub-VP:      ``dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta(s) ds))) dw``.

Reverse-time dynamics (paper, Eq. 6 and Eq. 13) are free functions of ``(sde, score_fn)``:
:func:`reverse_drift_diffusion`, :func:`reverse_discretize` and :func:`probability_flow_drift`.
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

__all__ = [
    "SDEBase",
    "check_sde",
    "SDES",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "SDE",
    "ScoreFn",
    "get_sde",
    "batch_mul",
    "gaussian_posterior",
    "reverse_drift_diffusion",
    "reverse_discretize",
    "probability_flow_drift",
    "importance_sample_t",
]


def batch_mul(v: jax.Array, x: jax.Array) -> jax.Array:
    """Multiplies a per-example vector ``v: [B]`` into ``x: [B, ...]``."""
    v = jnp.asarray(v)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)) * x


def _time_index(t: jax.Array, N: int, T: float) -> jax.Array:
    # Same convention as the original code: t in [0, T] maps to floor(t (N - 1) / T). Samplers use
    # the grid linspace(T, eps, N), whose i-th point is (N - 1 - i) + i eps away from the grid of
    # integers, so the floor is robust there; times exactly on i / (N - 1) may round down.
    return jnp.clip((t * (N - 1) / T).astype(jnp.int32), 0, N - 1)


def _std_normal_logp(z: jax.Array, var: float) -> jax.Array:
    d = math.prod(z.shape[1:])
    sq = jnp.sum(jnp.square(z).reshape(z.shape[0], -1), axis=-1)
    return -0.5 * d * math.log(2 * math.pi * var) - 0.5 * sq / var


def _xp(x):
    """numpy for host numbers (static grids stay float64, also inside a ``jax.jit`` trace),
    jax.numpy for arrays."""
    return np if isinstance(x, int | float | np.ndarray | np.generic) else jnp


class SDEBase:
    """Shared methods. Subclasses define ``drift_diffusion``, ``marginal_coeffs``, the prior and
    their noise parametrization.

    Noise parametrization (each SDE gives it in closed form; samplers and score conversions use
    only these methods): ``x_t = s(t) (x_0 + sigma(t) z)`` with the scale ``s(t)`` and the noise
    level ``sigma(t)`` of the scaled variable (Karras et al. 2022, Eq. 4);
    ``marginal_std(t) = s(t) sigma(t)``; ``log_snr(t) = -2 log sigma(t)``. The inverse maps take
    a noise level (or a marginal std) back to its time. Every method accepts host numbers
    (answering in float64) or arrays.
    """

    N: int
    T: float
    name: ClassVar[str]
    title: ClassVar[str] = "SDE"
    prior_std: ClassVar[float] = 1.0
    # Whether discretize and ancestral_step follow the SDE's own discrete chain (SMLD, DDPM)
    # rather than Euler--Maruyama and the continuous posterior.
    discrete_chain: ClassVar[bool] = False
    max_discrete_beta: ClassVar[float] = 0.0
    """The largest DDPM beta the discrete steps use (must stay below 1); 0 without betas."""

    def marginal_coeffs(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns ``(alpha_t, sigma_t)`` with ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``."""
        raise NotImplementedError

    def marginal_prob(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean ``[B, ...]`` and std ``[B]`` of the perturbation kernel ``p_0t(x_t | x_0 = x)``."""
        alpha, sigma = self.marginal_coeffs(t)
        return batch_mul(alpha, x), sigma

    def prior_sample(self, key: jax.Array, shape) -> jax.Array:
        """Samples ``x_T`` from the prior ``N(0, prior_std^2 I)``."""
        return self.prior_std * jax.random.normal(key, shape)

    def prior_logp(self, z: jax.Array) -> jax.Array:
        """Log-density of the prior, one value per example (sum over all non-batch dims)."""
        return _std_normal_logp(z, self.prior_std**2)

    def discretize(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One step of the discretized forward SDE ``x_{i+1} = x_i + f_i(x_i) + G_i z_i``.

        The default is Euler--Maruyama with ``dt = T / N``; VE and VP override it with the SMLD and
        DDPM discretizations (paper, Appendix B).
        """
        dt = self.T / self.N
        drift, diffusion = self.drift_diffusion(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def drift_diffusion(self, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def discrete_alpha(self, t: jax.Array) -> jax.Array:
        """``alpha_i = 1 - beta_i`` of the discrete chain at ``t`` (paper, Algorithm 5); 1 without
        betas (Algorithm 4)."""
        return jnp.ones_like(t)

    def discrete_marginal(self, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Scale and std ``[B]`` of ``x_i | x_0`` for discrete labels ``i`` (the SMLD / DDPM
        chains; label 0 of SMLD is ``sigma_max``, as NCSN orders them)."""
        raise ValueError(
            f"The {self.title} has no discrete (SMLD/DDPM) noise levels; set "
            "training.continuous=True."
        )

    def importance_sample_t(self, key, shape, eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
        """See :func:`importance_sample_t`."""
        raise TypeError(f"importance sampling is not defined for {type(self).__name__}")

    def ancestral_step(
        self, score: jax.Array, x: jax.Array, t: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Mean ``[B, ...]`` and std ``[B]`` of one ancestral-sampling step down from ``t``.

        By default the continuous posterior of :func:`gaussian_posterior` between ``t`` and
        ``max(t - T/N, 0)``; VE and VP use their SMLD and DDPM chains. (The original code has no
        ancestral sampler for sub-VP; for VE this construction reduces to the SMLD formula.)
        """
        s = jnp.maximum(t - self.T / self.N, 0.0)
        return gaussian_posterior(self, score, x, t, s)

    def noise_level(self, t):
        """``sigma(t)``: the noise level of ``x_t / s(t)``."""
        raise NotImplementedError

    def time_of_noise_level(self, sigma):
        """Inverse of :meth:`noise_level`."""
        raise NotImplementedError

    def scale_of_noise_level(self, sigma):
        """The scale ``s`` at noise level ``sigma`` (written in ``sigma`` to skip a round trip)."""
        raise NotImplementedError

    def marginal_std(self, t):
        """``s(t) sigma(t)``: the std of the perturbation kernel (host numbers or arrays)."""
        raise NotImplementedError

    def time_of_marginal_std(self, std):
        """Inverse of :meth:`marginal_std`."""
        raise NotImplementedError

    def log_snr(self, t):
        """``log(s^2 / std^2) = -2 log sigma(t)``."""
        return -2 * _xp(t).log(self.noise_level(t))

    def time_labels(self, t: jax.Array, *, continuous: bool) -> jax.Array:
        """The conditioning label the network sees at time ``t`` (see :mod:`.score`)."""
        raise NotImplementedError

    def score_from_output(self, out, t, labels, *, continuous: bool) -> jax.Array:
        """The score of a network's output ``out`` at ``t`` (labels of :meth:`time_labels`)."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class VESDE(SDEBase):
    """Variance-exploding SDE (the continuous limit of SMLD / NCSN).

    As in the paper (Appendix B), the perturbation kernel is taken to be ``N(x_0, sigma(t)^2 I)``;
    started from clean data the SDE's exact kernel variance is ``sigma(t)^2 - sigma_min^2``. The two
    agree for data already perturbed by ``sigma_min`` (the smallest noise level), and the
    difference is what ``sigma_min`` is chosen small enough to make negligible.
    """

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
        if self.N < 1 or self.T <= 0:
            raise ValueError(f"VESDE needs N >= 1 and T > 0, got N={self.N}, T={self.T}")

    @property
    def prior_std(self) -> float:  # type: ignore[override]
        return self.sigma_max

    def sigma(self, t: jax.Array) -> jax.Array:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** (t / self.T)

    @property
    def discrete_sigmas(self) -> jax.Array:
        """The SMLD noise levels ``sigma_1 < ... < sigma_N`` (geometric, ascending)."""
        return jnp.exp(jnp.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.N))

    def drift_diffusion(self, x, t):
        drift = jnp.zeros_like(x)
        diffusion = self.sigma(t) * math.sqrt(
            2 * math.log(self.sigma_max / self.sigma_min) / self.T
        )
        return drift, diffusion

    def marginal_coeffs(self, t):
        return jnp.ones_like(t), self.sigma(t)

    def noise_level(self, t):
        return self.sigma(t)

    def time_of_noise_level(self, sigma):
        return (
            self.T
            * _xp(sigma).log(sigma / self.sigma_min)
            / math.log(self.sigma_max / self.sigma_min)
        )

    def scale_of_noise_level(self, sigma):
        return _xp(sigma).ones_like(sigma)

    marginal_std = noise_level
    time_of_marginal_std = time_of_noise_level

    def time_labels(self, t, *, continuous):
        # NCSN++ (continuous) embeds sigma(t); NCSN / NCSNv2 index their discrete noise levels,
        # largest first.
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
        return x + batch_mul(sigma**2 - prev**2, score), jnp.sqrt(
            prev**2 * (sigma**2 - prev**2) / sigma**2
        )


@dataclasses.dataclass(frozen=True)
class _BetaSDE(SDEBase):
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
        if self.N < 1 or self.T <= 0:
            raise ValueError(
                f"{type(self).__name__} needs N >= 1 and T > 0, got N={self.N}, T={self.T}"
            )

    def beta(self, t: jax.Array) -> jax.Array:
        return self.beta_min + t / self.T * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: jax.Array) -> jax.Array:
        """``B(t) = int_0^t beta(s) ds``."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2 / self.T

    def importance_sample_t(self, key, shape, eps=1e-5):
        # Inverse-CDF sampling of q(t) ∝ g^2 / sigma^2 through F(B(t)) = int g^2 / sigma^2 dt.
        u = jax.random.uniform(key, shape)
        f_lo = self._weight_integral(self.integrated_beta(jnp.asarray(eps, jnp.float32)))
        f_hi = self._weight_integral(self.integrated_beta(jnp.asarray(self.T, jnp.float32)))
        t = self.time_of_integrated_beta(self._inverse_weight_integral(f_lo + u * (f_hi - f_lo)))
        t = jnp.clip(t, eps, self.T)
        return t, (f_hi - f_lo) / ((self.T - eps) * self._likelihood_factor(t))

    def time_of_integrated_beta(self, b: jax.Array) -> jax.Array:
        """Inverse of :meth:`integrated_beta` (written to avoid cancellation)."""
        slope = (self.beta_max - self.beta_min) / self.T
        return 2 * b / (self.beta_min + _xp(b).sqrt(self.beta_min**2 + 2 * slope * b))

    @property
    def max_discrete_beta(self) -> float:  # type: ignore[override]
        return self.beta_max / self.N

    def _discrete_beta(self, t):
        return self.discrete_betas[_time_index(t, self.N, self.T)]

    def discrete_alpha(self, t):
        return self.alphas[_time_index(t, self.N, self.T)]

    def time_labels(self, t, *, continuous):
        # DDPM++ and friends see 999 t; the discrete DDPM networks their step index.
        return t * 999 if continuous else t / self.T * (self.N - 1)

    def score_from_output(self, out, t, labels, *, continuous):
        if continuous:
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
        f = batch_mul(jnp.sqrt(1.0 - beta), x) - x
        return f, jnp.sqrt(beta)

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
    """The sub-VP SDE (paper, Eq. 11): variance bounded by the VP SDE's at every t.

    ``alphas``/``discrete_betas`` are those of the VP SDE with the same beta schedule; the Langevin
    corrector uses them (the original code crashed there because sub-VP had none).
    """

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

    def time_labels(self, t, *, continuous):
        return t * 999  # no discrete counterpart: always the continuous label

    def score_from_output(self, out, t, labels, *, continuous):
        return batch_mul(-1.0 / self.marginal_coeffs(t)[1], out)


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
    """Builds an SDE by name with the paper's defaults.

    Args:
      name: ``"vesde"``, ``"vpsde"`` or ``"subvpsde"`` (``"ve"``, ``"vp"``, ``"subvp"`` accepted).
      **params: ``sigma_min``, ``sigma_max`` (VE) or ``beta_min``, ``beta_max`` (VP, sub-VP), and
        ``N`` (number of discretization steps), ``T`` (end time).

    Returns:
      An immutable SDE value.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SDES:
        raise ValueError(f"Unknown SDE {name!r}; choose one of {sorted(SDES)}.")
    cls = SDES[key]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(params) - fields
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {sorted(unknown)} for {key}; valid ones are {sorted(fields)}."
        )
    return cls(**params)


def reverse_drift_diffusion(
    sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, probability_flow: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Drift and diffusion of the reverse-time SDE (paper, Eq. 6) or probability-flow ODE (Eq. 13).

    ``drift = f - g^2 score`` (times 1/2 for the ODE); ``diffusion = g`` (0 for the ODE). Time runs
    backwards: a solver integrates from ``T`` to ``0`` with negative ``dt``.
    """
    drift, diffusion = sde.drift_diffusion(x, t)
    score = score_fn(x, t)
    coef = 0.5 if probability_flow else 1.0
    drift = drift - coef * batch_mul(diffusion**2, score)
    return drift, jnp.zeros_like(diffusion) if probability_flow else diffusion


def probability_flow_drift(sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array) -> jax.Array:
    """``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)``: the probability-flow ODE (paper, Eq. 13)."""
    return reverse_drift_diffusion(sde, score_fn, x, t, probability_flow=True)[0]


def reverse_discretize(
    sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array, probability_flow: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Reverse of :meth:`discretize`: ``rev_f = f - G^2 score`` (1/2 for the ODE), ``rev_G = G``.

    This is the "reverse diffusion" discretization of the paper (Eq. 46).
    """
    f, G = sde.discretize(x, t)
    coef = 0.5 if probability_flow else 1.0
    rev_f = f - coef * batch_mul(G**2, score_fn(x, t))
    return rev_f, jnp.zeros_like(G) if probability_flow else G


def gaussian_posterior(
    sde: SDE, score: jax.Array, x: jax.Array, t: jax.Array, s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean ``[B, ...]`` and std ``[B]`` of ``p(x_s | x_t)``, ``s < t``, for the Gaussian chain
    whose marginals match the SDE's, with Tweedie's ``x_0`` estimate.

    With ``(a, sig) = sde.marginal_coeffs``, the chain ``x_t = a_ts x_s + sqrt(var_ts) z``,
    ``a_ts = a_t / a_s``, ``var_ts = sig_t^2 - a_ts^2 sig_s^2`` has exactly those marginals. Its
    posterior given ``x_0`` is Gaussian, and replacing ``x_0`` by
    ``x0_hat = (x_t + sig_t^2 score) / a_t`` gives

        mean = (a_s var_ts / sig_t^2) x0_hat + (a_ts sig_s^2 / sig_t^2) x_t,
        var  = var_ts sig_s^2 / sig_t^2.

    Substituting ``x0_hat`` the coefficient of ``x_t`` collapses to ``1 / a_ts``, so the mean is
    computed as ``(x_t + var_ts score) / a_ts``, which needs no division by ``sig_t^2`` (tiny near
    ``t = 0`` for sub-VP). For VE this is the SMLD ancestral step; for VP with one DDPM step
    (``a_ts^2 = 1 - beta``, ``var_ts = beta``) the mean is DDPM's.
    """
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
    """Samples ``t`` for the likelihood-weighted loss with density ``q(t) ∝ g(t)^2 / sigma(t)^2``.

    Likelihood weighting ``lambda(t) = g(t)^2`` multiplies the plain loss
    ``||sigma s + z||^2`` by ``g^2 / sigma^2``, which blows up as ``t -> 0`` for VP and sub-VP.
    Drawing ``t`` in proportion to that factor (Song et al. 2021, "Maximum likelihood training of
    score-based diffusion models", Sec. 5) reduces the variance. The inverse CDFs are closed-form:

    * VE: ``g^2/sigma^2 = 2 log(sigma_max/sigma_min)`` is constant, so ``q`` is uniform.
    * VP: ``int g^2/sigma^2 dt = log(exp(B(t)) - 1)`` with ``B(t) = int_0^t beta``.
    * sub-VP: ``int g^2/sigma^2 dt = log(2 cosh B(t) - 2)``.

    Returns:
      ``(t, w)`` where ``w = u(t) / q(t)`` is the density ratio to the uniform law on
      ``[eps, T]``, so ``E_q[w(t) l(t)] = E_uniform[l(t)]`` for any per-time loss ``l``.
    """
    check_sde(sde, "importance_sample_t")
    return sde.importance_sample_t(key, shape, eps)
