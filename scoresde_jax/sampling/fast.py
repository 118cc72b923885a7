"""Few-step samplers of the probability-flow ODE: EDM (Heun) and DPM-Solver++(2M).

Every SDE here has the marginal ``x_t = s(t) x_0 + s(t) sigma(t) z``, with

* VE:     ``s = 1``,       ``sigma(t)`` the SDE's noise level;
* VP:     ``s = alpha(t)``, ``sigma = sqrt(1 - alpha^2) / alpha = sqrt(expm1(B(t)))``;
* sub-VP: ``s = alpha(t)``, ``sigma = (1 - alpha^2) / alpha = 2 sinh(B(t) / 2)``;

where ``alpha(t) = exp(-B(t) / 2)`` and ``B(t) = int_0^t beta``. In the scaled variable
``y = x / s`` the marginals are ``p_0`` convolved with ``N(0, sigma^2 I)`` whatever the SDE, and
the probability-flow ODE becomes (Karras et al. 2022, "Elucidating the design space of
diffusion-based generative models", Eq. 4 with ``s = 1``)

    dy/dsigma = -sigma score_y(y, sigma) = (y - D(y; sigma)) / sigma,

with the denoiser ``D(y; sigma) = y + sigma^2 score_y`` and ``score_y(y, sigma) =
s score_x(s y, t(sigma))``. ``sigma(t)`` is monotone and inverted in closed form
(:func:`t_of_sigma`), so both samplers work on a grid of ``sigma`` and ask ``score_fn`` at the
matching times.

* :func:`edm_sample`: Karras et al.'s Algorithms 1 and 2 (Heun, optional stochastic churn) on a
  ``rho``-spaced grid of ``sigma``.
* :func:`dpm_solver_pp_sample`: DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: fast solver for
  guided sampling of diffusion probabilistic models", Algorithm 2, "2M") in its data-prediction
  form, on a grid uniform in ``lambda = -log sigma``. In ``y`` the exact solution of the linear
  part is ``y_t = e^{-h} y_s + (1 - e^{-h}) D``, so the same update serves VE, VP and sub-VP.

Both run as one ``lax.fori_loop`` and trace under ``jax.jit`` (with ``sde``, ``score_fn``,
``shape`` and the step options static).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.sampling._common import SampleResult, check_shape
from scoresde_jax.sde import SDE, VESDE, VPSDE, ScoreFn, SubVPSDE

__all__ = [
    "dpm_solver_pp_sample",
    "edm_sample",
    "make_denoiser",
    "scale_of_sigma",
    "sigma_of_t",
    "t_of_sigma",
]

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


def sigma_of_t(sde: SDE, t):
    """The noise level ``sigma(t)`` of the scaled variable ``y = x / s(t)``."""
    if isinstance(sde, VESDE):
        return sde.sigma(t)
    b = sde.integrated_beta(t)
    if isinstance(sde, VPSDE):
        return jnp.sqrt(jnp.expm1(b))
    if isinstance(sde, SubVPSDE):
        return 2 * jnp.sinh(0.5 * b)
    raise TypeError(f"no sigma(t) for {type(sde).__name__}")


def t_of_sigma(sde: SDE, sigma):
    """Inverse of :func:`sigma_of_t` in closed form.

    VE is log-linear in ``t``; for VP ``B(t) = log(1 + sigma^2)``, for sub-VP
    ``B(t) = 2 asinh(sigma / 2)``, and ``B`` (quadratic in ``t``) is inverted by the SDE.
    """
    if isinstance(sde, VESDE):
        return sde.T * jnp.log(sigma / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
    if isinstance(sde, VPSDE):
        return sde.time_of_integrated_beta(jnp.log1p(sigma**2))
    if isinstance(sde, SubVPSDE):
        return sde.time_of_integrated_beta(2 * jnp.arcsinh(0.5 * sigma))
    raise TypeError(f"no t(sigma) for {type(sde).__name__}")


def scale_of_sigma(sde: SDE, sigma):
    """The scale ``s`` at noise level ``sigma`` (written in ``sigma`` to skip a round trip)."""
    if isinstance(sde, VESDE):
        return jnp.ones_like(sigma)
    if isinstance(sde, VPSDE):  # alpha^2 (1 + sigma^2) = 1
        return jax.lax.rsqrt(1 + sigma**2)
    if isinstance(sde, SubVPSDE):  # alpha^2 + sigma alpha - 1 = 0
        return 2 / (sigma + jnp.sqrt(sigma**2 + 4))
    raise TypeError(f"no scale for {type(sde).__name__}")


def make_denoiser(sde: SDE, score_fn: ScoreFn) -> Denoiser:
    """``D(y, sigma) = y + sigma^2 s score_x(s y, t(sigma))`` for ``y: [B, ...]``, scalar sigma."""

    def denoiser(y, sigma):
        sigma = jnp.asarray(sigma, y.dtype)
        s = scale_of_sigma(sde, sigma)
        t = jnp.full((y.shape[0],), t_of_sigma(sde, sigma), y.dtype)
        return y + (sigma**2 * s) * score_fn(s * y, t)

    return denoiser


def _check_sde(sde: SDE) -> None:
    if not isinstance(sde, VESDE | VPSDE | SubVPSDE):
        raise TypeError(f"fast samplers need a VESDE, VPSDE or SubVPSDE, got {type(sde).__name__}")


def _initial_y(sde: SDE, key, shape, z, sigma_start: float) -> jax.Array:
    """The prior sample ``z`` (drawn when None) in ``y`` space at ``sigma_start``."""
    if z is None:
        if key is None:
            raise ValueError("a key is needed when no latent z is given")
        z = sde.prior_sample(key, shape)
    elif tuple(z.shape) != shape:
        raise ValueError(f"z has shape {tuple(z.shape)} but shape={shape} was requested")
    return z / scale_of_sigma(sde, jnp.asarray(sigma_start, z.dtype))


def _sigma_at(sde: SDE, t: float) -> float:
    """``sigma(t)`` in Python floats, for the static grids (also inside a ``jax.jit`` trace)."""
    if isinstance(sde, VESDE):
        return sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** (t / sde.T)
    b = sde.integrated_beta(t)
    return math.sqrt(math.expm1(b)) if isinstance(sde, VPSDE) else 2 * math.sinh(0.5 * b)


def edm_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array | None,
    shape,
    *,
    num_steps: int = 18,
    rho: float = 7.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    second_order: bool = True,
    z: jax.Array | None = None,
) -> SampleResult:
    """Samples with Karras et al.'s Heun sampler (Algorithm 1; Algorithm 2 when ``churn > 0``).

    The grid is ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho`` for ``i < n = num_steps``, then ``sigma_n = 0``. Each step from
    ``sigma_i`` is a Heun step of ``dy/dsigma = (y - D)/sigma``, except the last, to ``0``, which
    is Euler (it returns ``D(y; sigma_{n-1})``). With churn, step ``i`` first raises the noise to
    ``sigma_hat = (1 + gamma) sigma_i``, ``gamma = min(churn / n, sqrt(2) - 1)`` for ``sigma_i``
    in ``[s_tmin, s_tmax]``, by adding fresh noise of std ``s_noise sqrt(sigma_hat^2 -
    sigma_i^2)``; ``sigma_hat`` is capped at ``sigma(T)`` so the score is never asked about
    times past ``T``.

    Args:
      sde: the forward SDE (VE, VP or sub-VP).
      score_fn: ``score_fn(x, t) -> score`` for ``x: [B, ...]``, ``t: [B]``.
      key: a PRNG key (prior sample and churn noise); may be None when ``z`` is given and
        ``churn == 0``.
      shape: the sample shape ``[B, ...]``.
      num_steps: number of steps ``n`` (and of noise levels before ``0``).
      rho: the grid's warping exponent (7 in the paper).
      sigma_min: the last non-zero noise level; default ``sigma(1e-3)`` for VP and sub-VP and
        the SDE's ``sigma_min`` for VE.
      sigma_max: the first noise level; default ``sigma(T)``, where the SDE's prior is exact.
      churn: Algorithm 2's ``S_churn`` (0: deterministic probability-flow ODE).
      s_tmin: lowest noise level that gets churn.
      s_tmax: highest noise level that gets churn.
      s_noise: Algorithm 2's ``S_noise``, the std multiplier of the added noise.
      second_order: Heun (True) or Euler (False) steps.
      z: prior samples ``shape`` to start from instead of drawing them; they are mapped to ``y``
        space as ``z / s(sigma_max)``.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe = 2 num_steps - 1`` for Heun and ``num_steps`` for
      Euler.

    Raises:
      ValueError: for a bad shape, step count or noise range.
    """
    _check_sde(sde)
    shape = check_shape(shape)
    if num_steps < 1:
        raise ValueError(f"need num_steps >= 1, got {num_steps}")
    sigma_top = _sigma_at(sde, sde.T)
    if sigma_min is None:
        sigma_min = sde.sigma_min if isinstance(sde, VESDE) else _sigma_at(sde, 1e-3)
    if sigma_max is None:
        sigma_max = sigma_top
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if churn > 0 and key is None:
        raise ValueError("edm_sample needs a key for churn > 0")

    # The grid and the churn levels are static, so they are computed once in float64.
    frac = np.arange(num_steps) / max(num_steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = np.append((hi + frac * (lo - hi)) ** rho, 0.0)
    sigmas[0] = sigma_max
    gamma = min(churn / num_steps, math.sqrt(2) - 1)
    in_range = (sigmas[:-1] >= s_tmin) & (sigmas[:-1] <= s_tmax)
    sigma_hats = np.where(in_range, sigmas[:-1] * (1 + gamma), sigmas[:-1])
    sigma_hats = np.minimum(sigma_hats, np.maximum(sigma_top, sigmas[:-1]))
    noise_stds = s_noise * np.sqrt(sigma_hats**2 - sigmas[:-1] ** 2)
    use_churn = bool(np.any(noise_stds > 0))

    if key is not None:
        prior_key, churn_key = jax.random.split(key)
    else:
        prior_key = churn_key = None
    y = _initial_y(sde, prior_key, shape, z, sigma_max)
    dtype = y.dtype
    denoise = make_denoiser(sde, score_fn)
    sigmas_j = jnp.asarray(sigmas, dtype)
    hats_j = jnp.asarray(sigma_hats, dtype)
    noise_j = jnp.asarray(noise_stds, dtype)

    def raise_noise(i, y):
        if not use_churn:
            return y
        eps = jax.random.normal(jax.random.fold_in(churn_key, i), shape, dtype)
        return y + noise_j[i] * eps

    def step(i, y):
        y_hat = raise_noise(i, y)
        sigma_hat, sigma_next = hats_j[i], sigmas_j[i + 1]
        d = (y_hat - denoise(y_hat, sigma_hat)) / sigma_hat
        y_next = y_hat + (sigma_next - sigma_hat) * d
        if second_order:
            d_next = (y_next - denoise(y_next, sigma_next)) / sigma_next
            y_next = y_hat + (sigma_next - sigma_hat) * (0.5 * (d + d_next))
        return y_next

    y = jax.lax.fori_loop(0, num_steps - 1, step, y)
    # Euler step to sigma = 0: y + (0 - sigma_hat) (y - D) / sigma_hat = D. At sigma = 0 the
    # scale is 1 for every SDE, so y is already x.
    last = num_steps - 1
    x = denoise(raise_noise(last, y), hats_j[last])
    nfe = 2 * num_steps - 1 if second_order else num_steps
    return SampleResult(x, nfe)


def dpm_solver_pp_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array | None,
    shape,
    *,
    num_steps: int = 20,
    order: int = 2,
    eps: float = 1e-3,
    lower_order_final: bool = True,
    z: jax.Array | None = None,
) -> SampleResult:
    """Samples with multistep DPM-Solver++ (2M) from ``T`` down to ``eps``.

    With ``lambda = -log sigma`` (half the log-SNR) on the uniform grid ``lambda_0 = lambda(T)
    < ... < lambda_n = lambda(eps)``, ``h_i = lambda_{i+1} - lambda_i`` and ``D_i = D(y_i;
    sigma_i)``, each step is

        y_{i+1} = e^{-h_i} y_i + (1 - e^{-h_i}) D_hat_i,

    with ``D_hat_i = D_i`` (first order: DDIM) or ``D_hat_i = (1 + 1/(2 r)) D_i - 1/(2 r)
    D_{i-1}``, ``r = h_{i-1} / h_i`` (second order). The first step is first order, and so is the
    last when ``lower_order_final`` and ``num_steps < 15`` (Lu et al.'s advice for few steps).
    The result is ``x = s(eps) y_n``.

    Args:
      sde: the forward SDE (VE, VP or sub-VP).
      score_fn: ``score_fn(x, t) -> score`` for ``x: [B, ...]``, ``t: [B]``.
      key: a PRNG key for the prior sample (may be None when ``z`` is given).
      shape: the sample shape ``[B, ...]``.
      num_steps: number of steps, equal to the number of score evaluations.
      order: 1 (DDIM) or 2 (DPM-Solver++(2M)).
      eps: the final time.
      lower_order_final: take the last step at first order when ``num_steps < 15``.
      z: prior samples ``shape`` to start from instead of drawing them.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe = num_steps``.

    Raises:
      ValueError: for a bad shape, step count, order or ``eps``.
    """
    _check_sde(sde)
    shape = check_shape(shape)
    if num_steps < 1:
        raise ValueError(f"need num_steps >= 1, got {num_steps}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if not 0 < eps < sde.T:
        raise ValueError(f"need 0 < eps < T = {sde.T}, got eps={eps}")

    sigma_max, sigma_end = _sigma_at(sde, sde.T), _sigma_at(sde, eps)
    lambdas = np.linspace(-math.log(sigma_max), -math.log(sigma_end), num_steps + 1)
    sigmas = np.exp(-lambdas)
    sigmas[0], sigmas[-1] = sigma_max, sigma_end
    h = np.diff(lambdas)
    # Static per-step coefficients: y_{i+1} = decay_i y_i + (1 - decay_i) (c_i D_i + c'_i D_{i-1}).
    second = np.full(num_steps, order == 2)
    second[0] = False
    if lower_order_final and num_steps < 15:
        second[-1] = False
    r = np.concatenate([[1.0], h[:-1] / h[1:]])
    coef_cur = np.where(second, 1 + 0.5 / r, 1.0)
    coef_prev = np.where(second, -0.5 / r, 0.0)

    y = _initial_y(sde, key, shape, z, sigma_max)
    dtype = y.dtype
    denoise = make_denoiser(sde, score_fn)
    sigmas_j = jnp.asarray(sigmas, dtype)
    decay_j = jnp.asarray(np.exp(-h), dtype)
    gain_j = jnp.asarray(-np.expm1(-h), dtype)
    cur_j, prev_j = jnp.asarray(coef_cur, dtype), jnp.asarray(coef_prev, dtype)

    def step(i, carry):
        y, d_prev = carry
        d = denoise(y, sigmas_j[i])
        d_hat = cur_j[i] * d + prev_j[i] * d_prev
        return decay_j[i] * y + gain_j[i] * d_hat, d

    y, _ = jax.lax.fori_loop(0, num_steps, step, (y, jnp.zeros_like(y)))
    x = scale_of_sigma(sde, sigmas_j[-1]) * y
    return SampleResult(x, num_steps)
