"""The paper's formulas for the three SDEs, written out independently of ``scoresde_jax.core.sde``.

Tests compare the library against these (float64 numpy by default) rather than against itself.
Every function takes ``xp`` so the same formula can also run inside a JAX model function.
Parameters are the paper's defaults (VE: sigma in [0.01, 50]; VP, sub-VP: beta in [0.1, 20];
T = 1).
"""

import math

import numpy as np

SIGMA_MIN, SIGMA_MAX = 0.01, 50.0
BETA_MIN, BETA_MAX = 0.1, 20.0
NAMES = ("vesde", "vpsde", "subvpsde")


def ve_sigma(t, xp=np):
    return SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t


def beta(t, xp=np):
    return BETA_MIN + t * (BETA_MAX - BETA_MIN)


def integrated_beta(t, xp=np):
    return BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t**2


def coefficients(name, t, xp=np):
    """``(alpha_t, sigma_t, g(t)^2, f_t)`` with ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2 I)``.

    ``f_t`` is the linear drift coefficient, ``f(x, t) = f_t x``.
    """
    if name == "vesde":
        sigma = ve_sigma(t, xp)
        g2 = sigma**2 * 2 * math.log(SIGMA_MAX / SIGMA_MIN)
        return xp.ones_like(t), sigma, g2, xp.zeros_like(t)
    b = integrated_beta(t, xp)
    alpha = xp.exp(-0.5 * b)
    if name == "vpsde":
        return alpha, xp.sqrt(-xp.expm1(-b)), beta(t, xp), -0.5 * beta(t, xp)
    if name == "subvpsde":
        return alpha, -xp.expm1(-b), beta(t, xp) * -xp.expm1(-2 * b), -0.5 * beta(t, xp)
    raise ValueError(name)


def smld_sigmas(n=1000):
    """Ascending geometric noise levels ``sigma_1 = sigma_min, ..., sigma_N = sigma_max``."""
    return SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** (np.arange(n) / (n - 1))


def ddpm_betas(n=1000):
    """DDPM's linear schedule, rescaled with N so that ``N beta_i`` spans ``[0.1, 20]``."""
    return np.linspace(BETA_MIN / n, BETA_MAX / n, n)


def ddpm_alphas_cumprod(n=1000):
    return np.cumprod(1.0 - ddpm_betas(n))
