"""Few-step samplers of the probability-flow ODE: EDM (Heun), DPM-Solver++ (2M, 3M) and
singlestep and adaptive DPM-Solver.

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
by the SDE (:meth:`~scoresde_jax.core.sde.SDEBase.time_of_noise_level`), so all samplers work on
a grid of ``sigma`` and ask ``score_fn`` at the matching times.

* :func:`edm_sample`: Karras et al.'s Algorithms 1 and 2 (Heun, optional stochastic churn) on a
  ``rho``-spaced grid of ``sigma``.
* :func:`dpm_solver_pp_sample`: multistep DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: fast
  solver for guided sampling of diffusion probabilistic models", Algorithm 2, "2M", and its
  third-order extension "3M") in the data-prediction form, on a grid uniform in ``lambda = -log
  sigma``. In ``y`` the exact solution of the linear part is ``y_t = e^{-h} y_s + (1 - e^{-h})
  D``, so the same update serves VE, VP and sub-VP.
* :func:`dpm_solver_sample`: singlestep DPM-Solver-1/2/3 (Lu et al. 2022, "DPM-Solver: a fast ODE
  solver for diffusion probabilistic model sampling in around 10 steps", Algorithms 1 and 2) in
  the noise-prediction form ``eps = (y - D) / sigma``, with the DPM-Solver-fast split of an NFE
  budget into steps.
* :func:`dpm_solver_adaptive_sample`: the same paper's adaptive DPM-Solver-12 and -23 (its
  Algorithms 4 and 5), with error control and an exact NFE count.

The fixed-step samplers run as one ``lax.fori_loop`` (plus at most two unrolled lower-order
steps), the adaptive one as one ``lax.while_loop``; all trace under ``jax.jit`` (with ``sde``,
``score_fn``, ``shape`` and the step options static; the adaptive tolerances may be traced).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core.sde import SDE, ScoreFn, check_sde
from scoresde_jax.sampling import grid
from scoresde_jax.sampling._common import SampleResult, check_shape

__all__ = [
    "dpm_solver_adaptive_sample",
    "dpm_solver_fast_orders",
    "dpm_solver_pp_sample",
    "dpm_solver_sample",
    "edm_sample",
    "make_denoiser",
]

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


def make_denoiser(sde: SDE, score_fn: ScoreFn) -> Denoiser:
    """``D(y, sigma) = y + sigma^2 s score_x(s y, t(sigma))`` for ``y: [B, ...]``, scalar sigma."""

    def denoiser(y, sigma):
        sigma = jnp.asarray(sigma, y.dtype)
        s = sde.scale_of_noise_level(sigma)
        t = jnp.full((y.shape[0],), sde.time_of_noise_level(sigma), y.dtype)
        return y + (sigma**2 * s) * score_fn(s * y, t)

    return denoiser


def check_tolerances(rtol, atol) -> None:
    """Rejects negative or all-zero tolerances given as Python numbers (traced ones, which let
    one compiled sampler serve many tolerances, are taken as they are)."""
    if isinstance(rtol, int | float) and isinstance(atol, int | float):
        if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
            raise ValueError(f"need rtol, atol >= 0, not both 0; got rtol={rtol}, atol={atol}")


def _initial_y(sde: SDE, key, shape, z, sigma_start: float) -> jax.Array:
    """The prior sample ``z`` (drawn when None) in ``y`` space at ``sigma_start``."""
    if z is None:
        if key is None:
            raise ValueError("a key is needed when no latent z is given")
        z = sde.prior_sample(key, shape)
    elif tuple(z.shape) != shape:
        raise ValueError(f"z has shape {tuple(z.shape)} but shape={shape} was requested")
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
    check_sde(sde, "the fast samplers")
    shape = check_shape(shape)
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


def _multistep_orders(num_steps: int, order: int, lower_order_final: bool) -> np.ndarray:
    """Order of each multistep step: warm-up ``min(order, i + 1)``, and with
    ``lower_order_final`` and fewer than 15 steps also at most ``num_steps - i`` (so the last
    step is first order and, for 3M, the one before it second order)."""
    i = np.arange(num_steps)
    orders = np.minimum(order, i + 1)
    if lower_order_final and num_steps < 15:
        orders = np.minimum(orders, num_steps - i)
    return orders


def _multistep_coefficients(lambdas: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """``[n, 4]`` coefficients ``(e^{-h_i}, a_i, b_i, c_i)`` of the multistep update
    ``y_{i+1} = e^{-h_i} y_i + a_i D_i + b_i D_{i-1} + c_i D_{i-2}`` (float64).

    Exactly, ``y_{i+1} = e^{-h} y_i + int_0^h e^{-(h - tau)} D(lambda_i + tau) dtau``. With the
    Taylor expansion ``D = D_i + tau D' + tau^2/2 D''`` the weights are the integrals ``I_0 =
    1 - e^{-h}``, ``I_1 = h - I_0`` and ``I_2 = h^2/2 - I_1`` of ``e^{-(h - tau)} tau^k / k!``:

    * order 1 (DDIM): ``a = I_0``;
    * order 2 (DPM-Solver++(2M), Lu et al. 2022, Algorithm 2): ``D' ~ (D_i - D_{i-1}) / h_{i-1}``
      with ``I_1`` replaced by ``I_0 h / 2``, i.e. ``a = I_0 (1 + 1/(2r))``, ``b = -I_0 / (2r)``,
      ``r = h_{i-1} / h_i``;
    * order 3 (3M): ``D'`` and ``D''`` of the quadratic through ``D_{i-2}, D_{i-1}, D_i``:
      ``D' = d_0 + h_{i-1} d_2``, ``D'' = 2 d_2`` with the divided differences ``d_0 = (D_i -
      D_{i-1}) / h_{i-1}``, ``d_1 = (D_{i-1} - D_{i-2}) / h_{i-2}``, ``d_2 = (d_0 - d_1) /
      (h_{i-1} + h_{i-2})``, weighted by the exact ``I_1`` and ``I_2``.
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
    """Samples with multistep DPM-Solver++ (2M or 3M) from ``T`` down to ``eps``.

    With ``lambda = -log sigma`` (half the log-SNR) on the uniform grid ``lambda_0 = lambda(T)
    < ... < lambda_n = lambda(eps)``, ``h_i = lambda_{i+1} - lambda_i`` and ``D_i = D(y_i;
    sigma_i)``, each step is the exponential-integrator update (Lu et al. 2022, "DPM-Solver++",
    Eq. 9 in the data-prediction form)

        y_{i+1} = e^{-h_i} y_i + a_i D_i + b_i D_{i-1} + c_i D_{i-2},

    whose weights (:func:`_multistep_coefficients`) make it exact for ``D`` polynomial in
    ``lambda`` of degree ``order - 1``: DDIM for order 1, the paper's 2M for order 2, and 3M
    (quadratic extrapolation of the last three ``D``, exact exponential weights) for order 3.
    Step ``i`` has order ``min(order, i + 1)`` (a multistep method needs history); when
    ``lower_order_final`` and ``num_steps < 15`` it also has at most order ``num_steps - i``,
    so the last step is first order and, for 3M, the second last second order (Lu et al.'s
    advice for few steps, where the long last steps near the data make high-order
    extrapolation unstable). The result is ``x = s(eps) y_n``.

    The first-order warm-up step has an ``O(h^2)`` local error, which would cap the global
    order of 3M at two; at ``sigma(T)`` the denoiser barely changes with ``lambda`` (it is
    close to the data mean), so that term is small and third order is observed over the step
    counts that matter (tests/test_fast_samplers_more.py).

    Args:
      sde: the forward SDE (VE, VP or sub-VP).
      score_fn: ``score_fn(x, t) -> score`` for ``x: [B, ...]``, ``t: [B]``.
      key: a PRNG key for the prior sample (may be None when ``z`` is given).
      shape: the sample shape ``[B, ...]``.
      num_steps: number of steps, equal to the number of score evaluations.
      order: 1 (DDIM), 2 (DPM-Solver++(2M)) or 3 (DPM-Solver++(3M)).
      eps: the final time.
      lower_order_final: lower the order of the last steps when ``num_steps < 15``.
      z: prior samples ``shape`` to start from instead of drawing them.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe = num_steps``.

    Raises:
      ValueError: for a bad shape, step count, order or ``eps``.
    """
    check_sde(sde, "the fast samplers")
    shape = check_shape(shape)
    if num_steps < 1:
        raise ValueError(f"need num_steps >= 1, got {num_steps}")
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    grid.check_eps(sde, eps)

    lambdas, sigmas = grid.log_snr_grid(sde, eps, num_steps)
    sigma_max = sigmas[0]
    coefs = _multistep_coefficients(lambdas, _multistep_orders(num_steps, order, lower_order_final))

    y = _initial_y(sde, key, shape, z, sigma_max)
    dtype = y.dtype
    denoise = make_denoiser(sde, score_fn)
    sigmas_j = jnp.asarray(sigmas, dtype)
    coefs_j = jnp.asarray(coefs, dtype)

    def step(i, carry):
        y, d_prev, d_prev2 = carry
        d = denoise(y, sigmas_j[i])
        decay, a, b, c = coefs_j[i, 0], coefs_j[i, 1], coefs_j[i, 2], coefs_j[i, 3]
        return decay * y + a * d + b * d_prev + c * d_prev2, d, d_prev

    zeros = jnp.zeros_like(y)
    y, _, _ = jax.lax.fori_loop(0, num_steps, step, (y, zeros, zeros))
    x = sde.scale_of_noise_level(sigmas_j[-1]) * y
    return SampleResult(x, num_steps)


# --- Singlestep DPM-Solver (Lu et al. 2022, NeurIPS) -------------------------------------------
#
# In ``y`` the noise prediction is ``eps(y, sigma) = (y - D(y; sigma)) / sigma = -sigma score_y``
# and the probability-flow ODE is ``dy/dsigma = eps``. With ``sigma = e^{-lambda}`` its exact
# solution from ``lambda_s`` to ``lambda_t = lambda_s + h`` is (the paper's Eq. 3.4 with
# ``alpha = 1``)
#
#     y_t = y_s - int_{lambda_s}^{lambda_t} e^{-lambda} eps(lambda) dlambda,
#
# and a Taylor expansion of ``eps`` in ``lambda`` gives DPM-Solver-k. The weights use
# ``int e^{-lambda} dlambda = sigma_t (e^h - 1)`` and ``int e^{-lambda} (lambda - lambda_s)
# dlambda = sigma_t h phi(h)`` with ``phi(h) = (e^h - 1) / h - 1``.


def _make_noise_predictor(sde: SDE, score_fn: ScoreFn) -> Denoiser:
    """``eps(y, sigma) = -sigma s score_x(s y, t(sigma))`` (no cancellation in ``y - D``)."""

    def noise(y, sigma):
        sigma = jnp.asarray(sigma, y.dtype)
        s = sde.scale_of_noise_level(sigma)
        t = jnp.full((y.shape[0],), sde.time_of_noise_level(sigma), y.dtype)
        return -(sigma * s) * score_fn(s * y, t)

    return noise


def _phi(h):
    """``(e^h - 1) / h - 1`` without cancellation for small ``h`` (series below 1e-2)."""
    small = jnp.abs(h) < 1e-2
    h_safe = jnp.where(small, 1.0, h)
    series = h * (0.5 + h * (1 / 6 + h / 24))
    return jnp.where(small, series, jnp.expm1(h_safe) / h_safe - 1)


def _dpm_solver_1(y, eps_s, lam_s, h):
    """DPM-Solver-1 (DDIM): ``y_t = y_s - sigma_t (e^h - 1) eps_s`` (an Euler step in sigma)."""
    sigma_t = jnp.exp(-(lam_s + h))
    return y - sigma_t * jnp.expm1(h) * eps_s


def _dpm_solver_2(noise, y, eps_s, lam_s, h, r1):
    """DPM-Solver-2 (the paper's Algorithm 1): one more evaluation at ``lambda_s + r1 h``.

    Returns ``(y_t, (u1, d1))`` with the intermediate point ``u1`` and ``d1 = eps(u1) - eps_s``,
    which DPM-Solver-3 with the same ``r1`` shares.
    """
    sigma_1 = jnp.exp(-(lam_s + r1 * h))
    sigma_t = jnp.exp(-(lam_s + h))
    u1 = y - sigma_1 * jnp.expm1(r1 * h) * eps_s
    d1 = noise(u1, sigma_1) - eps_s
    y_t = y - sigma_t * jnp.expm1(h) * eps_s - sigma_t * jnp.expm1(h) / (2 * r1) * d1
    return y_t, d1


def _dpm_solver_3(noise, y, eps_s, d1, lam_s, h, r1, r2):
    """DPM-Solver-3 (the paper's Algorithm 2) given ``d1`` from :func:`_dpm_solver_2` with
    the same ``r1``: one more evaluation at ``lambda_s + r2 h``."""
    sigma_2 = jnp.exp(-(lam_s + r2 * h))
    sigma_t = jnp.exp(-(lam_s + h))
    u2 = y - sigma_2 * jnp.expm1(r2 * h) * eps_s - sigma_2 * (r2 / r1) * _phi(r2 * h) * d1
    d2 = noise(u2, sigma_2) - eps_s
    return y - sigma_t * jnp.expm1(h) * eps_s - sigma_t / r2 * _phi(h) * d2


def _singlestep(noise, y, lam_s, h, order: int):
    """One DPM-Solver-``order`` step from ``lambda_s`` to ``lambda_s + h`` (``order`` NFE);
    ``r1 = 1/2`` for order 2, ``r1 = 1/3, r2 = 2/3`` for order 3 as in the paper."""
    eps_s = noise(y, jnp.exp(-lam_s))
    if order == 1:
        return _dpm_solver_1(y, eps_s, lam_s, h)
    if order == 2:
        return _dpm_solver_2(noise, y, eps_s, lam_s, h, 0.5)[0]
    _, d1 = _dpm_solver_2(noise, y, eps_s, lam_s, h, 1 / 3)
    return _dpm_solver_3(noise, y, eps_s, d1, lam_s, h, 1 / 3, 2 / 3)


def dpm_solver_fast_orders(nfe: int, order: int) -> list[int]:
    """The step orders of DPM-Solver-fast for a budget of ``nfe`` evaluations.

    Lu et al. (2022), Section 3.4 ("DPM-Solver-fast"), highest orders first:

    * order 3: ``M = nfe // 3 + 1`` steps: ``M - 2`` DPM-Solver-3 steps then one DPM-Solver-2
      and one DPM-Solver-1 step when ``nfe % 3 == 0``; ``M - 1`` DPM-Solver-3 steps then one
      DPM-Solver-1 step when ``nfe % 3 == 1``; ``M - 1`` DPM-Solver-3 steps then one
      DPM-Solver-2 step when ``nfe % 3 == 2``;
    * order 2: ``nfe // 2`` DPM-Solver-2 steps, then one DPM-Solver-1 step if ``nfe`` is odd;
    * order 1: ``nfe`` DPM-Solver-1 (DDIM) steps.

    The orders always add up to ``nfe``.
    """
    if nfe < 1:
        raise ValueError(f"need nfe >= 1, got {nfe}")
    if order == 1:
        return [1] * nfe
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    if order == 3:
        m = nfe // 3 + 1
        tails = {0: [2, 1], 1: [1], 2: [2]}
        tail = tails[nfe % 3]
        return [3] * (m - len(tail)) + tail
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
    """Samples with singlestep DPM-Solver-1/2/3 (Lu et al. 2022, "DPM-Solver: a fast ODE solver
    for diffusion probabilistic model sampling in around 10 steps") from ``T`` down to ``eps``.

    This is the paper's noise-prediction form, in ``y``: ``eps(y, sigma) = (y - D) / sigma``
    and, for a step of length ``h`` in ``lambda = -log sigma`` (half the log-SNR),

    * DPM-Solver-1: ``y_t = y_s - sigma_t (e^h - 1) eps_s`` (DDIM);
    * DPM-Solver-2 (Algorithm 1, ``r1 = 1/2``): ``u = y_s - sigma_{s1} (e^{r1 h} - 1) eps_s``,
      ``y_t = y_s - sigma_t (e^h - 1) eps_s - sigma_t (e^h - 1) / (2 r1) (eps(u) - eps_s)``;
    * DPM-Solver-3 (Algorithm 2, ``r1 = 1/3``, ``r2 = 2/3``): two intermediate points and the
      weights ``phi(h) = (e^h - 1) / h - 1`` (see :func:`_dpm_solver_3`).

    The step endpoints are uniform in ``lambda`` between ``lambda(T)`` and ``lambda(eps)``.
    With ``fast`` the budget ``nfe`` is split into steps as DPM-Solver-fast does
    (:func:`dpm_solver_fast_orders`: ``order``-th order steps, then lower-order ones that use up
    the rest of the budget); otherwise ``nfe`` must be a multiple of ``order`` and every one of
    the ``nfe / order`` steps has order ``order`` (the plain method, whose global error is
    ``O(h^order)``). The result is ``x = s(eps) y``.

    Args:
      sde: the forward SDE (VE, VP or sub-VP).
      score_fn: ``score_fn(x, t) -> score`` for ``x: [B, ...]``, ``t: [B]``.
      key: a PRNG key for the prior sample (may be None when ``z`` is given).
      shape: the sample shape ``[B, ...]``.
      nfe: the number of score evaluations.
      order: 1, 2 or 3.
      eps: the final time.
      fast: the DPM-Solver-fast split of ``nfe`` (True) or equal-order steps (False).
      z: prior samples ``shape`` to start from instead of drawing them.

    Returns:
      ``SampleResult(x, nfe)``.

    Raises:
      ValueError: for a bad shape, budget, order or ``eps``.
    """
    check_sde(sde, "the fast samplers")
    shape = check_shape(shape)
    grid.check_eps(sde, eps)
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if fast:
        orders = dpm_solver_fast_orders(nfe, order)
    else:
        if nfe < order or nfe % order:
            raise ValueError(
                f"fast=False needs nfe to be a positive multiple of order={order}, got nfe={nfe}"
            )
        orders = [order] * (nfe // order)
    n_main = sum(1 for _ in itertools.takewhile(lambda k: k == orders[0], orders))

    lambdas, (sigma_max, *_, sigma_end) = grid.log_snr_grid(sde, eps, len(orders))
    y = _initial_y(sde, key, shape, z, sigma_max)
    dtype = y.dtype
    noise = _make_noise_predictor(sde, score_fn)
    lam_j = jnp.asarray(lambdas[:-1], dtype)
    h_j = jnp.asarray(np.diff(lambdas), dtype)

    y = jax.lax.fori_loop(
        0, n_main, lambda i, y: _singlestep(noise, y, lam_j[i], h_j[i], orders[0]), y
    )
    for i in range(n_main, len(orders)):
        y = _singlestep(noise, y, lam_j[i], h_j[i], orders[i])
    x = sde.scale_of_noise_level(jnp.asarray(sigma_end, dtype)) * y
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
    """Samples with adaptive-step DPM-Solver-12 (``order=2``) or DPM-Solver-23 (``order=3``).

    Lu et al. (2022), "DPM-Solver", adaptive step size (its Algorithms 4 and 5): every attempt from
    ``lambda_s`` with length ``h`` in ``lambda = -log sigma`` computes a lower-order solution
    ``y_lo`` and a higher-order one ``y_hi`` that share their score evaluations:

    * DPM-Solver-12: DPM-Solver-1 and DPM-Solver-2 (``r1 = 1/2``): 2 evaluations;
    * DPM-Solver-23: DPM-Solver-2 (``r1 = 1/3``) and DPM-Solver-3 (``r1 = 1/3, r2 = 2/3``):
      3 evaluations.

    The error is measured in ``x = s y`` (the data's own scale): ``delta = max(atol, rtol
    max(|x_lo|, |x_prev|))`` elementwise, with ``x_prev`` the previous accepted lower-order
    solution, and ``E = max_b RMS((x_hi - x_lo) / delta)``, the worst example of the batch
    (all examples share the step). The step is accepted when ``E <= 1`` (the state becomes
    ``y_hi``) and the next step is ``h theta E^{-1/order}``, ``theta = 0.9``, the factor
    clipped to ``[0.2, 10]`` so that one extreme estimate can neither stall nor overshoot the
    solve, and the step cut to the remaining interval. ``atol = 0.0078`` is the paper's value
    for data in ``[-1, 1]`` (one 8-bit level); scale it with the data. The loop is one
    ``lax.while_loop``. After a rejection the evaluation at ``(y_s, lambda_s)`` is reused, so
    an attempt costs ``order`` evaluations after an accepted step and ``order - 1`` after a
    rejected one.

    Args:
      sde: the forward SDE (VE, VP or sub-VP).
      score_fn: ``score_fn(x, t) -> score`` for ``x: [B, ...]``, ``t: [B]``.
      key: a PRNG key for the prior sample (may be None when ``z`` is given).
      shape: the sample shape ``[B, ...]``.
      order: 2 (DPM-Solver-12) or 3 (DPM-Solver-23).
      rtol: relative tolerance (the paper: 0.05).
      atol: absolute tolerance in data units (the paper: 0.0078 for data in [-1, 1]).
      eps: the final time.
      h_init: the first trial step in ``lambda``.
      theta: the safety factor of the step-size update.
      max_steps: the most attempted steps; past it the result is NaN.
      z: prior samples ``shape`` to start from instead of drawing them.

    Returns:
      ``SampleResult(x, nfe)`` with ``nfe`` the exact number of score evaluations (int32).

    Raises:
      ValueError: for a bad shape, order, tolerance or ``eps``.
    """
    check_sde(sde, "the fast samplers")
    shape = check_shape(shape)
    grid.check_eps(sde, eps)
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
    batch = shape[0]

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
        if order == 2:
            y_lo = _dpm_solver_1(y, eps_s, lam, h)
            y_hi, _ = _dpm_solver_2(noise, y, eps_s, lam, h, 0.5)
        else:
            y_lo, d1 = _dpm_solver_2(noise, y, eps_s, lam, h, 1 / 3)
            y_hi = _dpm_solver_3(noise, y, eps_s, d1, lam, h, 1 / 3, 2 / 3)
        x_lo = scaled(y_lo, lam + h)
        delta = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x_lo), jnp.abs(scaled(y_prev, lam))))
        ratio = ((scaled(y_hi, lam + h) - x_lo) / delta).reshape(batch, -1)
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

    init = (
        y,
        y,
        jnp.asarray(lam0, dtype),
        jnp.asarray(h_init, dtype),
        jnp.zeros_like(y),
        jnp.array(False),
        jnp.array(0, jnp.int32),
        jnp.array(0, jnp.int32),
        jnp.array(False),
    )
    y, *_, nfe, _, done = jax.lax.while_loop(cond, body, init)
    x = sde.scale_of_noise_level(jnp.asarray(sigma_end, dtype)) * y
    return SampleResult(jnp.where(done, x, jnp.nan), nfe)
