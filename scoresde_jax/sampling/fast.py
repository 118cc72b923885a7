"""Few-step samplers of the probability-flow ODE: EDM (Heun), DPM-Solver++ (2M, 3M), singlestep
and adaptive DPM-Solver. With ``x_t = s(t) (x_0 + sigma(t) z)`` and ``y = x / s`` the ODE is
``dy/dsigma = (y - D(y; sigma)) / sigma`` for every SDE (Karras et al. 2022, Eq. 4), ``D = y +
sigma^2 s score_x(s y, t(sigma))``, ``t(sigma)`` in closed form, so the samplers step in ``sigma``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core.sde import SDE, ScoreFn, check_sde
from scoresde_jax.sampling import grid
from scoresde_jax.sampling._common import SampleResult, check_shape, initial_state

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


def _scaled_score(sde: SDE, score_fn: ScoreFn, y, sigma):
    """``(sigma, s, score_x(s y, t(sigma)))`` for ``y: [B, ...]`` and a scalar ``sigma``."""
    sigma = jnp.asarray(sigma, y.dtype)
    s = sde.scale_of_noise_level(sigma)
    t = jnp.full((y.shape[0],), sde.time_of_noise_level(sigma), y.dtype)
    return sigma, s, score_fn(s * y, t)


def make_denoiser(sde: SDE, score_fn: ScoreFn) -> Denoiser:
    """``D(y, sigma) = y + sigma^2 s score_x(s y, t(sigma))`` for ``y: [B, ...]``, scalar sigma."""

    def denoiser(y, sigma):
        sigma, s, score = _scaled_score(sde, score_fn, y, sigma)
        return y + (sigma**2 * s) * score

    return denoiser


def check_tolerances(rtol, atol) -> None:
    """Rejects negative or all-zero Python-number tolerances (traced ones pass as they are)."""
    if isinstance(rtol, int | float) and isinstance(atol, int | float):
        if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
            raise ValueError(f"need rtol, atol >= 0, not both 0; got rtol={rtol}, atol={atol}")


def _checked(sde: SDE, shape, eps: float | None = None, order: int = 1) -> tuple[int, ...]:
    check_sde(sde, "the fast samplers")
    shape = check_shape(shape)
    if eps is not None:
        grid.check_eps(sde, eps)
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    return shape


def _initial_y(sde: SDE, key, shape, z, sigma_start: float) -> jax.Array:
    """The prior sample ``z`` (drawn when None) in ``y`` space at ``sigma_start``."""
    z = initial_state(sde, key, shape, z)
    return z / sde.scale_of_noise_level(jnp.asarray(sigma_start, z.dtype))


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
    """Karras et al.'s Heun sampler (Algorithm 1; Algorithm 2 when ``churn > 0``) on
    :func:`~scoresde_jax.sampling.grid.karras_sigmas` from ``sigma_max`` (default ``sigma(T)``) to
    ``sigma_min`` (VE's own, else ``sigma(1e-3)``), then an Euler step to 0. Churn levels
    ``sigma_hat`` are capped at ``sigma(T)``. ``nfe = 2 n - 1`` (Heun) or ``n`` (Euler).
    """
    shape = _checked(sde, shape)
    if num_steps < 1:
        raise ValueError(f"need num_steps >= 1, got {num_steps}")
    sigma_top = grid.noise_level_at(sde, sde.T)
    if sigma_min is None:
        sigma_min = grid.noise_level_at(sde, 0.0) or grid.noise_level_at(sde, 1e-3)  # VE: sigma_min
    if sigma_max is None:
        sigma_max = sigma_top
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if churn > 0 and key is None:
        raise ValueError("edm_sample needs a key for churn > 0")

    # The grid and the churn levels are static, so they are computed once in float64.
    sigmas = grid.karras_sigmas(sigma_min, sigma_max, num_steps, rho)
    gamma = min(churn / num_steps, math.sqrt(2) - 1)
    in_range = (sigmas[:-1] >= s_tmin) & (sigmas[:-1] <= s_tmax)
    sigma_hats = np.where(in_range, sigmas[:-1] * (1 + gamma), sigmas[:-1])
    sigma_hats = np.minimum(sigma_hats, np.maximum(sigma_top, sigmas[:-1]))
    noise_stds = s_noise * np.sqrt(sigma_hats**2 - sigmas[:-1] ** 2)
    use_churn = bool(np.any(noise_stds > 0))

    prior_key, churn_key = (None, None) if key is None else jax.random.split(key)
    y = _initial_y(sde, prior_key, shape, z, sigma_max)
    dtype = y.dtype
    denoise = make_denoiser(sde, score_fn)
    sigmas_j, hats_j, noise_j = (jnp.asarray(a, dtype) for a in (sigmas, sigma_hats, noise_stds))

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
    return SampleResult(x, 2 * num_steps - 1 if second_order else num_steps)


def _multistep_coefficients(lambdas: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """``[n, 4]`` float64 ``(e^{-h_i}, a_i, b_i, c_i)`` of ``y_{i+1} = e^{-h_i} y_i + a_i D_i + b_i
    D_{i-1} + c_i D_{i-2}``, from ``int_0^h e^{-(h - tau)} D dtau`` with weights ``I_0 = 1 -
    e^{-h}``, ``I_1 = h - I_0``, ``I_2 = h^2/2 - I_1``: order 2 is DPM-Solver++(2M) (``I_1 ~ I_0 h
    / 2``), order 3 uses the quadratic through the last three ``D`` with the exact ``I_1, I_2``.
    """
    h = np.diff(lambdas)
    coefs = np.zeros((len(h), 4))
    for i, (hi, k) in enumerate(zip(h, orders, strict=True)):
        i0 = -math.expm1(-hi)
        coefs[i, :2] = math.exp(-hi), i0
        if k == 2:
            r = h[i - 1] / hi
            coefs[i, 1:3] = i0 * (1 + 0.5 / r), -0.5 * i0 / r
        elif k == 3:
            h0, h1 = h[i - 1], h[i - 2]
            i1 = hi - i0
            i2 = 0.5 * hi**2 - i1
            # y += I1 D' + 2 I2 d2 = A (D_i - D_{i-1}) + B (D_{i-1} - D_{i-2}).
            big_a = (i1 * (1 + h0 / (h0 + h1)) + 2 * i2 / (h0 + h1)) / h0
            big_b = -(i1 * h0 + 2 * i2) / ((h0 + h1) * h1)
            coefs[i, 1:] = i0 + big_a, big_b - big_a, -big_b
    return coefs


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
    """Multistep DPM-Solver++ (Lu et al. 2022, Eq. 9, data prediction) from ``T`` to ``eps`` on a
    grid uniform in ``lambda = -log sigma``: DDIM (1), 2M (2), 3M (3). Step ``i`` has order
    ``min(order, i + 1)`` and, with ``lower_order_final`` and ``num_steps < 15``, at most
    ``num_steps - i`` (Lu et al.: long last steps make high orders unstable). At ``sigma(T)``
    ``D`` barely changes, so 3M still shows third order. ``nfe = num_steps``.
    """
    if num_steps < 1:
        raise ValueError(f"need num_steps >= 1, got {num_steps}")
    shape = _checked(sde, shape, eps, order)
    i = np.arange(num_steps)
    orders = np.minimum(order, i + 1)
    if lower_order_final and num_steps < 15:
        orders = np.minimum(orders, num_steps - i)

    lambdas, sigmas = grid.log_snr_grid(sde, eps, num_steps)
    coefs = _multistep_coefficients(lambdas, orders)
    y = _initial_y(sde, key, shape, z, sigmas[0])
    denoise = make_denoiser(sde, score_fn)
    sigmas_j, coefs_j = jnp.asarray(sigmas, y.dtype), jnp.asarray(coefs, y.dtype)

    def step(i, carry):
        y, d_prev, d_prev2 = carry
        d = denoise(y, sigmas_j[i])
        decay, a, b, c = coefs_j[i, 0], coefs_j[i, 1], coefs_j[i, 2], coefs_j[i, 3]
        return decay * y + a * d + b * d_prev + c * d_prev2, d, d_prev

    zeros = jnp.zeros_like(y)
    y, _, _ = jax.lax.fori_loop(0, num_steps, step, (y, zeros, zeros))
    return SampleResult(sde.scale_of_noise_level(sigmas_j[-1]) * y, num_steps)


# Singlestep DPM-Solver (Lu et al. 2022) in noise prediction, ``eps = (y - D) / sigma``: ``y_t =
# y_s - int e^{-lambda} eps dlambda`` (their Eq. 3.4, ``alpha = 1``), ``eps`` Taylor-expanded.


def _make_noise_predictor(sde: SDE, score_fn: ScoreFn) -> Denoiser:
    """``eps(y, sigma) = -sigma s score_x(s y, t(sigma))`` (no cancellation in ``y - D``)."""

    def noise(y, sigma):
        sigma, s, score = _scaled_score(sde, score_fn, y, sigma)
        return -(sigma * s) * score

    return noise


def _phi(h):
    """``(e^h - 1) / h - 1`` without cancellation for small ``h`` (series below 1e-2)."""
    small = jnp.abs(h) < 1e-2
    h_safe = jnp.where(small, 1.0, h)
    series = h * (0.5 + h * (1 / 6 + h / 24))
    return jnp.where(small, series, jnp.expm1(h_safe) / h_safe - 1)


def _ddim(y, eps_s, lam_s, h):
    """DPM-Solver-1 (DDIM, an Euler step in sigma): ``(sigma_t, y_s - sigma_t (e^h - 1) eps_s)``."""
    sigma_t = jnp.exp(-(lam_s + h))
    return sigma_t, y - sigma_t * jnp.expm1(h) * eps_s


def _dpm_solver(noise, y, eps_s, lam_s, h, order: int):
    """``(y_t, y_lo)``: DPM-Solver-``order`` from ``lambda_s`` to ``lambda_s + h`` given ``eps_s``
    (Algorithm 1, ``r1 = 1/2``, for order 2; Algorithm 2, ``r1 = 1/3, r2 = 2/3``, for order 3) and
    the order-lower solution that shares its ``order - 1`` evaluations."""
    sigma_t, y_1 = _ddim(y, eps_s, lam_s, h)
    if order == 1:
        return y_1, y_1
    r1 = 0.5 if order == 2 else 1 / 3
    sigma_1, u1 = _ddim(y, eps_s, lam_s, r1 * h)
    d1 = noise(u1, sigma_1) - eps_s
    y_2 = y_1 - sigma_t * jnp.expm1(h) / (2 * r1) * d1
    if order == 2:
        return y_2, y_1
    r2 = 2 / 3
    sigma_2, u2 = _ddim(y, eps_s, lam_s, r2 * h)
    d2 = noise(u2 - sigma_2 * (r2 / r1) * _phi(r2 * h) * d1, sigma_2) - eps_s
    return y_1 - sigma_t / r2 * _phi(h) * d2, y_2


def dpm_solver_fast_orders(nfe: int, order: int) -> list[int]:
    """The step orders of DPM-Solver-fast (Lu et al. 2022, Section 3.4), adding up to ``nfe``."""
    if nfe < 1:
        raise ValueError(f"need nfe >= 1, got {nfe}")
    if order == 1:
        return [1] * nfe
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    if order == 3:
        tail = {0: [2, 1], 1: [1], 2: [2]}[nfe % 3]
        return [3] * (nfe // 3 + 1 - len(tail)) + tail
    raise ValueError(f"order must be 1, 2 or 3, got {order}")


def dpm_solver_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array | None,
    shape,
    *,
    nfe: int = 20,
    order: int = 3,
    eps: float = 1e-3,
    fast: bool = True,
    z: jax.Array | None = None,
) -> SampleResult:
    """Singlestep DPM-Solver-1/2/3 (Lu et al. 2022, Algorithms 1, 2), steps uniform in ``lambda``
    from ``T`` to ``eps``: ``nfe`` split as DPM-Solver-fast does, or (not ``fast``) ``nfe / order``
    steps of that order."""
    shape = _checked(sde, shape, eps, order)
    if fast:
        orders = dpm_solver_fast_orders(nfe, order)
    elif nfe < order or nfe % order:
        raise ValueError(
            f"fast=False needs nfe to be a positive multiple of order={order}, got nfe={nfe}"
        )
    else:
        orders = [order] * (nfe // order)
    n_main = orders.count(orders[0])  # the orders never increase

    lambdas, (sigma_max, *_, sigma_end) = grid.log_snr_grid(sde, eps, len(orders))
    y = _initial_y(sde, key, shape, z, sigma_max)
    noise = _make_noise_predictor(sde, score_fn)
    lam_j = jnp.asarray(lambdas[:-1], y.dtype)
    h_j = jnp.asarray(np.diff(lambdas), y.dtype)

    def step(i, y, order):
        return _dpm_solver(noise, y, noise(y, jnp.exp(-lam_j[i])), lam_j[i], h_j[i], order)[0]

    y = jax.lax.fori_loop(0, n_main, lambda i, y: step(i, y, orders[0]), y)
    for i in range(n_main, len(orders)):
        y = step(i, y, orders[i])
    x = sde.scale_of_noise_level(jnp.asarray(sigma_end, y.dtype)) * y
    return SampleResult(x, sum(orders))


def dpm_solver_adaptive_sample(
    sde: SDE,
    score_fn: ScoreFn,
    key: jax.Array | None,
    shape,
    *,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    eps: float = 1e-3,
    h_init: float = 0.05,
    theta: float = 0.9,
    max_steps: int = 1000,
    z: jax.Array | None = None,
) -> SampleResult:
    """Adaptive DPM-Solver-12 (``order=2``) or -23 (``order=3``) (Lu et al. 2022, Algorithms 4, 5).

    Error in ``x = s y``: ``E = max_b RMS((x_hi - x_lo) / delta)``, ``delta = max(atol, rtol
    max(|x_lo|, |x_prev|))`` (the batch shares the step); the step factor ``theta E^{-1/order}`` is
    clipped to ``[0.2, 10]``. ``atol = 0.0078`` is one 8-bit level of data in ``[-1, 1]``. A
    rejection reuses ``eps_s``; ``nfe`` (int32) is exact; past ``max_steps`` attempts, NaN.
    """

    shape = _checked(sde, shape, eps)
    if order not in (2, 3):
        raise ValueError(f"order must be 2 (DPM-Solver-12) or 3 (DPM-Solver-23), got {order}")
    check_tolerances(rtol, atol)
    if h_init <= 0 or max_steps < 1:
        raise ValueError(f"need h_init > 0 and max_steps >= 1, got {h_init}, {max_steps}")

    (lam0, lam_end), (sigma_max, sigma_end) = grid.log_snr_grid(sde, eps, 1)
    y = _initial_y(sde, key, shape, z, sigma_max)
    dtype = y.dtype
    noise = _make_noise_predictor(sde, score_fn)
    lam_end = jnp.asarray(lam_end, dtype)

    def scaled(v, lam):
        return sde.scale_of_noise_level(jnp.exp(-lam)) * v

    def cond(carry):
        *_, attempts, done = carry
        return jnp.logical_and(~done, attempts < max_steps)

    def body(carry):
        y, y_prev, lam, h, eps_s, have_eps, nfe, attempts, _ = carry
        eps_s = jax.lax.cond(have_eps, lambda: eps_s, lambda: noise(y, jnp.exp(-lam)))
        nfe = nfe + jnp.where(have_eps, 0, 1) + (order - 1)
        remaining = lam_end - lam
        last = h >= remaining
        h = jnp.where(last, remaining, h)
        y_hi, y_lo = _dpm_solver(noise, y, eps_s, lam, h, order)
        x_lo = scaled(y_lo, lam + h)
        delta = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x_lo), jnp.abs(scaled(y_prev, lam))))
        ratio = ((scaled(y_hi, lam + h) - x_lo) / delta).reshape(shape[0], -1)
        err = jnp.max(jnp.sqrt(jnp.mean(ratio**2, axis=1)))
        err = jnp.where(jnp.isfinite(err), err, jnp.inf)
        accept = err <= 1
        factor = jnp.clip(theta * jnp.maximum(err, 1e-10) ** (-1 / order), 0.2, 10.0)
        return (
            jnp.where(accept, y_hi, y),
            jnp.where(accept, y_lo, y_prev),
            jnp.where(accept, jnp.where(last, lam_end, lam + h), lam),
            h * factor,
            eps_s,
            ~accept,
            nfe,
            attempts + 1,
            accept & last,
        )

    false, zero = jnp.array(False), jnp.array(0, jnp.int32)
    init = (y, y, jnp.asarray(lam0, dtype), jnp.asarray(h_init, dtype), jnp.zeros_like(y))
    y, *_, nfe, _, done = jax.lax.while_loop(cond, body, (*init, false, zero, zero, false))
    x = sde.scale_of_noise_level(jnp.asarray(sigma_end, dtype)) * y
    return SampleResult(jnp.where(done, x, jnp.nan), nfe)
