"""scoresde_jax: score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX.

The names users need most, and the core modules as ``scoresde_jax.sde``, ``scoresde_jax.likelihood``
and so on, imported on first use (``import scoresde_jax`` and the command line start without JAX).
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # SDEs and scores
    "get_sde": "scoresde_jax.core.sde",
    "VESDE": "scoresde_jax.core.sde",
    "VPSDE": "scoresde_jax.core.sde",
    "SubVPSDE": "scoresde_jax.core.sde",
    "SDES": "scoresde_jax.core.sde",
    "get_score_fn": "scoresde_jax.core.score",
    # Training objectives
    "get_loss_fn": "scoresde_jax.core.losses",
    "sde_loss": "scoresde_jax.core.losses",
    "smld_loss": "scoresde_jax.core.losses",
    "ddpm_loss": "scoresde_jax.core.losses",
    "score_matching_loss": "scoresde_jax.core.score_matching",
    "implicit_score_matching": "scoresde_jax.core.score_matching",
    "sliced_score_matching": "scoresde_jax.core.score_matching",
    # Likelihood and the ODE
    "log_likelihood": "scoresde_jax.core.likelihood",
    "bits_per_dim": "scoresde_jax.core.likelihood",
    "dequantize": "scoresde_jax.core.likelihood",
    "logp_to_bpd": "scoresde_jax.core.likelihood",
    "ODEOptions": "scoresde_jax.core.odeint",
    # Samplers
    "pc_sample": "scoresde_jax.sampling",
    "ode_sample": "scoresde_jax.sampling",
    "encode": "scoresde_jax.sampling",
    "decode": "scoresde_jax.sampling",
    "edm_sample": "scoresde_jax.sampling",
    "dpm_solver_pp_sample": "scoresde_jax.sampling",
    "dpm_solver_sample": "scoresde_jax.sampling",
    "dpm_solver_adaptive_sample": "scoresde_jax.sampling",
    "sde_adaptive_sample": "scoresde_jax.sampling",
    "langevin_sample": "scoresde_jax.sampling",
    "annealed_langevin_sample": "scoresde_jax.sampling",
    "reverse_sde_trajectory": "scoresde_jax.sampling",
    "ode_trajectory": "scoresde_jax.sampling",
    "inpaint": "scoresde_jax.sampling",
    "colorize": "scoresde_jax.sampling",
    "make_mask": "scoresde_jax.sampling",
    "interpolate": "scoresde_jax.sampling",
    "round_trip": "scoresde_jax.sampling",
    "temperature_sample": "scoresde_jax.sampling",
    "PREDICTORS": "scoresde_jax.sampling",
    "CORRECTORS": "scoresde_jax.sampling",
    "SampleResult": "scoresde_jax.sampling",
    # Guidance and ground truth
    "classifier_guided_score_fn": "scoresde_jax.core.guidance",
    "GaussianMixture": "scoresde_jax.core.gmm",
    # Networks
    "NCSNpp": "scoresde_jax.models",
    "DDPM": "scoresde_jax.models",
    "NCSN": "scoresde_jax.models",
    "NCSNv2": "scoresde_jax.models",
    "MLPScore": "scoresde_jax.models",
    "NoiseConditionalCNN": "scoresde_jax.models",
    "NoiseConditionalWideResNet": "scoresde_jax.models",
    "get_classifier": "scoresde_jax.models",
    # Metrics
    "frechet_distance": "scoresde_jax.metrics",
    "inception_score": "scoresde_jax.metrics",
    "kernel_inception_distance": "scoresde_jax.metrics",
    "FIDInceptionV3": "scoresde_jax.metrics",
    "load_inception_params": "scoresde_jax.metrics",
    "classifier_fd": "scoresde_jax.metrics.feature_fd",
    # Configs to objects, training, conversion
    "build_experiment": "scoresde_jax.run.experiment",
    "restore_checkpoint": "scoresde_jax.run.experiment",
    "sampler_from_config": "scoresde_jax.run.experiment",
    "fit": "scoresde_jax.run.trainer",
    "train": "scoresde_jax.run.trainer",
    "Job": "scoresde_jax.run.trainer",
    "convert_checkpoint": "scoresde_jax.modes.convert",
}
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
