"""scoresde_jax: score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX.

The names users need most, and the core modules as ``scoresde_jax.sde``, ``scoresde_jax.likelihood``
and so on, imported on first use (``import scoresde_jax`` and the command line start without JAX).
"""

import importlib

from scoresde_jax import xla_flags as _xla_flags

_xla_flags.apply()

__version__ = "0.1.0"

# Module (under scoresde_jax.) -> the public names it gives.
_GROUPS = {
    # SDEs, scores and training objectives
    "core.sde": "get_sde VESDE VPSDE SubVPSDE SDES",
    "core.score": "get_score_fn",
    "core.losses": "get_loss_fn sde_loss smld_loss ddpm_loss",
    "core.score_matching": "score_matching_loss implicit_score_matching sliced_score_matching",
    # Likelihood and the ODE
    "core.likelihood": "log_likelihood bits_per_dim dequantize logp_to_bpd",
    "core.odeint": "ODEOptions",
    # Samplers
    "sampling": (
        "pc_sample ode_sample encode decode edm_sample dpm_solver_pp_sample dpm_solver_sample "
        "dpm_solver_adaptive_sample sde_adaptive_sample langevin_sample annealed_langevin_sample "
        "reverse_sde_trajectory ode_trajectory inpaint colorize make_mask interpolate round_trip "
        "temperature_sample PREDICTORS CORRECTORS SampleResult"
    ),
    # Guidance and ground truth
    "core.guidance": "classifier_guided_score_fn",
    "core.gmm": "GaussianMixture",
    # Networks
    "models": (
        "NCSNpp DDPM NCSN NCSNv2 MLPScore NoiseConditionalCNN NoiseConditionalWideResNet "
        "get_classifier"
    ),
    # Metrics
    "metrics": (
        "frechet_distance inception_score kernel_inception_distance FIDInceptionV3 "
        "load_inception_params"
    ),
    "metrics.feature_fd": "classifier_fd",
    # Configs to objects, training, conversion
    "run.experiment": "build_experiment restore_checkpoint sampler_from_config",
    "run.trainer": "fit train Job",
    "modes.convert": "convert_checkpoint",
}
_EXPORTS = {n: f"scoresde_jax.{m}" for m, names in _GROUPS.items() for n in names.split()}
"""Public name -> the module it comes from (imported on first use)."""

# The library's modules under their short names (``scoresde_jax.sde.get_sde(...)``).
_MODULES = {
    name: f"scoresde_jax.core.{name}"
    for name in ("sde", "score", "losses", "likelihood", "gmm", "guidance", "score_matching")
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'scoresde_jax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_MODULES))
