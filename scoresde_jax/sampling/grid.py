"""The time and noise-level grids of the samplers, each built in one place.

Noise-level grids are static: computed once on the host in float64 (also inside a ``jax.jit``
trace) from the SDE's closed-form noise parametrization. The index of the discrete level at a time
belongs to the SDEs' own discrete chains (:mod:`scoresde_jax.core.sde`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core.sde import SDE, check_sde


def check_eps(sde: SDE, eps: float) -> None:
    """Rejects a final time outside ``(0, T)``."""
    if not 0 < eps < sde.T:
        raise ValueError(f"need 0 < eps < T = {sde.T}, got eps={eps}")


def noise_level_at(sde: SDE, t: float) -> float:
    """``sigma(t)`` in float64."""
    return float(sde.noise_level(float(t)))


def pc_times(T: float, eps: float, num_steps: int) -> jax.Array:
    """``[num_steps + 1]``: the PC grid ``linspace(T, eps, num_steps)`` (paper, Algorithm 1), then
    ``0``; step ``i`` runs at ``ts[i]`` and lands at ``ts[i + 1]``."""
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
    """``(lambdas, sigmas)``, ``[num_steps + 1]`` each: ``lambda = -log sigma`` (half the log-SNR,
    DPM-Solver's grid) uniform from ``lambda(T)`` to ``lambda(eps)``, the end sigmas exact."""
    sigma_max, sigma_end = noise_level_at(sde, sde.T), noise_level_at(sde, eps)
    lambdas = np.linspace(-math.log(sigma_max), -math.log(sigma_end), num_steps + 1)
    sigmas = np.exp(-lambdas)
    sigmas[0], sigmas[-1] = sigma_max, sigma_end
    return lambdas, sigmas


def annealed_noise_levels(
    sde: SDE, num_levels: int, sigma_min: float | None = None
) -> tuple[jax.Array, jax.Array]:
    """``(t [L], sigma [L])``: the times and descending noise levels of annealed Langevin dynamics.

    As in NCSN the levels are geometric from the kernel std at ``T`` down to ``sigma_min``
    (default: VE's own, else 0.01, NCSN's ``sigma_L`` and VP's std at ``t ~ 1e-3``), and ``t_i``
    is the time whose kernel has std ``sigma_i`` (``sigma`` is recomputed from ``t``). For VE that
    is a uniform time grid; for VP and sub-VP a uniform time grid would crowd the levels near
    ``sigma ~ 1`` and leave a gap at the small end (``L = 10``: last VP levels 0.36 and 0.01), and
    sub-VP's std falls like ``B(t)``, not ``sqrt(B(t))`` (1e-4 at ``t = 1e-3``).
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
