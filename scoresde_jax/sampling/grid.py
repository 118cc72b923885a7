"""The time and noise-level grids of the samplers, each built in one place.

* :func:`pc_times`: the predictor-corrector grid ``linspace(T, eps, N)`` (paper, Algorithm 1).
* :func:`karras_sigmas`: Karras et al.'s ``rho``-spaced noise levels (EDM).
* :func:`log_snr_grid`: points uniform in ``lambda = -log sigma`` (half the log-SNR), DPM-Solver's.
* :func:`annealed_noise_levels`: NCSN's geometric noise levels and their times.

Grids of noise levels are static: they are computed once on the host in float64 (also inside a
``jax.jit`` trace) from the SDE's closed-form noise parametrization. The index of the discrete
level at a time, ``floor(t (N - 1) / T)``, belongs to the SDEs' own discrete chains and lives with
them in :mod:`scoresde_jax.core.sde`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core.sde import SDE, check_sde

__all__ = [
    "annealed_noise_levels",
    "check_eps",
    "karras_sigmas",
    "log_snr_grid",
    "noise_level_at",
    "pc_times",
]


def check_eps(sde: SDE, eps: float) -> None:
    """Rejects a final time outside ``(0, T)``."""
    if not 0 < eps < sde.T:
        raise ValueError(f"need 0 < eps < T = {sde.T}, got eps={eps}")


def noise_level_at(sde: SDE, t: float) -> float:
    """``sigma(t)`` in float64."""
    return float(sde.noise_level(float(t)))


def pc_times(T: float, eps: float, num_steps: int) -> jax.Array:
    """``[num_steps + 1]``: the step times ``linspace(T, eps, num_steps)``, then ``0``.

    Step ``i`` runs at ``ts[i]`` and lands at ``ts[i + 1]``; the last step lands at ``0``.
    """
    return jnp.append(jnp.linspace(T, eps, num_steps), 0.0)


def karras_sigmas(sigma_min: float, sigma_max: float, num_steps: int, rho: float) -> np.ndarray:
    """``[n + 1]``: ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho`` for ``i < n = num_steps`` (Karras et al. 2022, Eq. 5), then 0."""
    frac = np.arange(num_steps) / max(num_steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = np.append((hi + frac * (lo - hi)) ** rho, 0.0)
    sigmas[0] = sigma_max
    return sigmas


def log_snr_grid(sde: SDE, eps: float, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lambdas, sigmas)``, ``[num_steps + 1]`` each: ``lambda = -log sigma`` uniform from
    ``lambda(T)`` to ``lambda(eps)``; the end points of ``sigmas`` are exactly ``sigma(T)`` and
    ``sigma(eps)``."""
    sigma_max, sigma_end = noise_level_at(sde, sde.T), noise_level_at(sde, eps)
    lambdas = np.linspace(-math.log(sigma_max), -math.log(sigma_end), num_steps + 1)
    sigmas = np.exp(-lambdas)
    sigmas[0], sigmas[-1] = sigma_max, sigma_end
    return lambdas, sigmas


def annealed_noise_levels(
    sde: SDE, num_levels: int, sigma_min: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """The times ``t_i`` and noise levels ``sigma_i`` (descending) of annealed Langevin dynamics.

    As in NCSN the levels are geometric, from ``sigma_1 = sigma_T`` (the kernel std at ``T``:
    ``sigma_max`` for VE, about 1 for VP and sub-VP) down to ``sigma_L = sigma_min``, and ``t_i``
    is the time at which the SDE's perturbation kernel has std ``sigma_i``, so the score model is
    asked at the marginal ``p_{t_i}`` it was trained on. For VE, geometric levels are a uniform time
    grid, ``t_i = linspace(T, 0, L)`` for the default ``sigma_min``. For VP and sub-VP a uniform
    time grid would put most levels near ``sigma ≈ 1`` and leave a large gap at the small end
    (with ``L = 10`` the last two VP levels would be 0.36 and 0.01), and sub-VP's kernel std
    falls like ``B(t)`` rather than ``sqrt(B(t))``, so a fixed small time would mean a much smaller
    noise level (1e-4 at ``t = 1e-3``) than for VP; geometric levels in ``sigma`` avoid both.

    Args:
      sde: the forward SDE.
      num_levels: ``L``.
      sigma_min: the smallest level; ``None``: ``sde.sigma_min`` for VE, 0.01 for VP and sub-VP
        (NCSN's ``sigma_L``, and VP's kernel std at ``t ≈ 1e-3``).

    Returns:
      ``(t [L], sigma [L])``; ``sigma`` is recomputed from ``t``, so the two agree exactly.

    Raises:
      ValueError: for ``num_levels < 1`` or a ``sigma_min`` outside the SDE's range of stds.
    """
    if num_levels < 1:
        raise ValueError(f"need num_levels >= 1, got {num_levels}")
    check_sde(sde, "annealed_noise_levels")
    # Python floats, so that the check below also works under jax.jit.
    top, lowest = float(sde.marginal_std(float(sde.T))), float(sde.marginal_std(0.0))
    if sigma_min is None:
        sigma_min = lowest or 0.01  # VE: its sigma_min
    if not (sigma_min > 0 and lowest <= sigma_min < top):
        raise ValueError(
            f"sigma_min={sigma_min} is outside the noise levels of {type(sde).__name__}, "
            f"[{lowest}, {top:.6g}); pick a smaller level than the kernel std at T."
        )
    log_sigmas = jnp.linspace(math.log(top), math.log(sigma_min), num_levels, dtype=jnp.float32)
    if num_levels == 1:
        log_sigmas = jnp.full((1,), math.log(sigma_min), jnp.float32)
    t = jnp.clip(sde.time_of_marginal_std(jnp.exp(log_sigmas)), 0.0, sde.T)
    t = t.at[0].set(sde.T) if num_levels > 1 else t
    return t, sde.marginal_coeffs(t)[1]
