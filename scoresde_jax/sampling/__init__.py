"""Samplers: predictor-corrector (paper, Section 4.2), probability-flow ODE (Section 4.3) and its
fast solvers (EDM, DPM-Solver, DPM-Solver++), the adaptive reverse SDE, Langevin dynamics (NCSN),
and inpainting and colorization (:mod:`.constraints`). Every sampler takes an SDE and any
``score_fn(x, t)`` and returns ``SampleResult(x, nfe)``; :mod:`.grid` builds their grids.
"""

from scoresde_jax.sampling._common import SampleResult, Trajectory
from scoresde_jax.sampling.constraints import colorize, inpaint, load_mask_png, make_mask
from scoresde_jax.sampling.correctors import CORRECTORS
from scoresde_jax.sampling.fast import (
    dpm_solver_adaptive_sample,
    dpm_solver_pp_sample,
    dpm_solver_sample,
    edm_sample,
    make_denoiser,
)
from scoresde_jax.sampling.grid import annealed_noise_levels, karras_sigmas, log_snr_grid, pc_times
from scoresde_jax.sampling.langevin import annealed_langevin_sample, langevin_sample
from scoresde_jax.sampling.latent import interpolate, round_trip, slerp, temperature_sample
from scoresde_jax.sampling.ode import SAMPLING_ODE, decode, encode, ode_sample, ode_trajectory
from scoresde_jax.sampling.pc import pc_sample, reverse_sde_trajectory
from scoresde_jax.sampling.predictors import PREDICTORS
from scoresde_jax.sampling.sde_adaptive import SDE_SOLVERS, sde_adaptive_sample

__all__ = [
    "CORRECTORS",
    "PREDICTORS",
    "SAMPLING_ODE",
    "SDE_SOLVERS",
    "SampleResult",
    "Trajectory",
    "annealed_langevin_sample",
    "annealed_noise_levels",
    "colorize",
    "decode",
    "dpm_solver_adaptive_sample",
    "dpm_solver_pp_sample",
    "dpm_solver_sample",
    "edm_sample",
    "encode",
    "inpaint",
    "interpolate",
    "karras_sigmas",
    "langevin_sample",
    "load_mask_png",
    "log_snr_grid",
    "make_denoiser",
    "make_mask",
    "ode_sample",
    "ode_trajectory",
    "pc_sample",
    "pc_times",
    "reverse_sde_trajectory",
    "round_trip",
    "sde_adaptive_sample",
    "slerp",
    "temperature_sample",
]
