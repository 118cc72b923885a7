"""Samplers: predictor-corrector (paper, Section 4.2), probability-flow ODE (Section 4.3) and
fast deterministic solvers of the same ODE (EDM Heun, DPM-Solver++).

Every sampler takes an SDE and any ``score_fn(x, t)``, a trained network or a closed-form score,
and returns ``SampleResult(x, nfe)``.
"""

from scoresde_jax.sampling._common import SampleResult
from scoresde_jax.sampling.correctors import CORRECTORS
from scoresde_jax.sampling.fast import dpm_solver_pp_sample, edm_sample, make_denoiser
from scoresde_jax.sampling.ode import SOLVERS, decode, encode, ode_sample
from scoresde_jax.sampling.pc import pc_sample
from scoresde_jax.sampling.predictors import PREDICTORS

__all__ = [
    "CORRECTORS",
    "PREDICTORS",
    "SOLVERS",
    "SampleResult",
    "decode",
    "dpm_solver_pp_sample",
    "edm_sample",
    "encode",
    "make_denoiser",
    "ode_sample",
    "pc_sample",
]
