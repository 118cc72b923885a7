"""The boundary between ml-collections configs and the library's typed functions.

Each ``*_from_config`` reads one config section and calls a library constructor with keyword
arguments; nothing below this module ever reads a ConfigDict.
"""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import optax

from scoresde_jax import losses
from scoresde_jax.errors import ConfigError
from scoresde_jax.models import get_model
from scoresde_jax.sde import SDE, get_sde
from scoresde_jax.state import make_optimizer

__all__ = [
    "SAMPLER_METHODS",
    "sde_from_config",
    "model_from_config",
    "optimizer_from_config",
    "loss_from_config",
    "image_source_from_config",
]


def sde_from_config(config) -> SDE:
    """``config.training.sde`` names the SDE; its parameters live in ``config.model``."""
    name = config.training.sde.lower()
    m = config.model
    if name in ("vesde", "ve"):
        return get_sde(name, sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)
    if name in ("vpsde", "vp", "subvpsde", "subvp"):
        return get_sde(name, beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)
    raise ConfigError(
        f"Unknown config.training.sde={config.training.sde!r}; use 'vesde', 'vpsde' or 'subvpsde'."
    )


def model_from_config(config) -> nn.Module:
    """The network of ``config.model.name`` (see :data:`scoresde_jax.models.MODELS`)."""
    return get_model(config)


def optimizer_from_config(optim_config) -> optax.GradientTransformation:
    o = optim_config
    return make_optimizer(
        lr=o.lr,
        beta1=o.beta1,
        eps=o.eps,
        warmup=o.warmup,
        grad_clip=o.grad_clip,
        weight_decay=o.weight_decay,
        optimizer=o.optimizer,
    )


def loss_from_config(config, sde: SDE):
    """``config.training.loss`` ("dsm", "ism", "ssm", "ssm_vr") with its options.

    Exact-trace ISM is refused here, before any compilation, when the data has more than
    ``EXACT_TRACE_MAX_DIM`` dimensions.
    """
    t = config.training
    loss = str(t.get("loss", "dsm")).lower()
    exact_trace = t.get("ism_exact_trace", True)
    if loss == "ism" and exact_trace:
        from scoresde_jax.score_matching import EXACT_TRACE_MAX_DIM

        d = config.data
        dim = d.dim if "dim" in d else d.image_size**2 * d.num_channels
        if dim > EXACT_TRACE_MAX_DIM:
            raise ConfigError(
                f"training.loss='ism' with training.ism_exact_trace=True needs {dim} "
                f"Jacobian-vector products per example for {dim}-dimensional data (the limit is "
                f"{EXACT_TRACE_MAX_DIM}); set --config.training.ism_exact_trace=False "
                "(Hutchinson's trace) or use --config.training.loss=ssm."
            )
    return losses.get_loss_fn(
        sde,
        continuous=t.continuous,
        likelihood_weighting=t.likelihood_weighting,
        importance_sampling=t.get("importance_sampling", False),
        reduce_mean=t.reduce_mean,
        loss=loss,
        ism_exact_trace=exact_trace,
        ssm_num_projections=t.get("ssm_num_projections", 1),
        ssm_noise=t.get("ssm_noise", "rademacher"),
    )


SAMPLER_METHODS = (
    "pc",
    "ode",
    "edm",
    "dpm_solver_pp",
    "dpm_solver",
    "dpm_solver_adaptive",
    "sde_adaptive",
    "langevin",
    "annealed_langevin",
)
"""The values of ``config.sampling.method``."""


def sampler_from_config(sampling_config, sde: SDE):
    """``sample(score_fn, key, shape) -> SampleResult`` for ``config.sampling``.

    ``method = "pc"`` uses ``predictor``/``corrector``/``snr``/``n_steps_each``/``noise_removal``;
    ``method = "ode"`` uses the probability-flow ODE with ``ode_solver``/``rtol``/``atol``;
    ``method = "edm"`` Heun's method on Karras et al.'s time steps (``num_steps``, default 18,
    ``edm_churn``); ``method = "dpm_solver_pp"`` multistep DPM-Solver++ (``num_steps``, default
    20, ``dpm_order`` 1, 2 or 3: DDIM, 2M, 3M); ``method = "dpm_solver"`` singlestep
    DPM-Solver-``dpm_order`` with ``num_steps`` (default 20) score evaluations split as
    DPM-Solver-fast; ``method = "dpm_solver_adaptive"`` adaptive DPM-Solver-12 (``dpm_order``
    2) or -23 (3) with ``dpm_rtol``/``dpm_atol``; ``method = "sde_adaptive"`` the reverse SDE
    with adaptive steps (``sde_rtol``/``sde_atol``, ``noise_removal``);
    ``method = "annealed_langevin"`` NCSN's annealed Langevin dynamics
    (``langevin_num_levels`` x ``langevin_steps_each`` steps, ``langevin_step_size``);
    ``method = "langevin"`` plain Langevin dynamics at ``t = eps`` with the same number of steps.
    """
    from scoresde_jax import sampling

    s = sampling_config
    method = s.method.lower()
    if method == "pc":

        def sample(score_fn, key, shape):
            return sampling.pc_sample(
                sde,
                score_fn,
                key,
                shape,
                predictor=s.predictor,
                corrector=s.corrector,
                snr=s.snr,
                n_steps=s.n_steps_each,
                denoise=s.noise_removal,
                eps=s.get("eps", 1e-3),
                num_steps=s.get("num_steps", None),
                probability_flow=s.get("probability_flow", False),
            )

    elif method == "ode":

        def sample(score_fn, key, shape):
            return sampling.ode_sample(
                sde,
                score_fn,
                key,
                shape,
                eps=s.get("eps", 1e-3),
                rtol=s.get("rtol", 1e-5),
                atol=s.get("atol", 1e-5),
                solver=s.get("ode_solver", "tsit5"),
                denoise=s.noise_removal,
            )

    elif method in ("langevin", "annealed_langevin"):
        # Annealed: NCSN's L levels x T steps; plain: as many steps at the single level t = eps.
        levels, steps_each = s.get("langevin_num_levels", 10), s.get("langevin_steps_each", 100)
        step_size = s.get("langevin_step_size", 2e-5)

        def sample(score_fn, key, shape):
            if method == "langevin":
                return sampling.langevin_sample(
                    sde,
                    score_fn,
                    key,
                    shape,
                    step_size=step_size,
                    n_steps=levels * steps_each,
                    t=s.get("eps", 1e-3),
                    denoise=s.noise_removal,
                )
            return sampling.annealed_langevin_sample(
                sde,
                score_fn,
                key,
                shape,
                num_levels=levels,
                n_steps_each=steps_each,
                step_size=step_size,
                denoise=s.noise_removal,
            )

    elif method == "edm":

        def sample(score_fn, key, shape):
            return sampling.edm_sample(
                sde,
                score_fn,
                key,
                shape,
                num_steps=s.get("num_steps", None) or 18,
                churn=s.get("edm_churn", 0.0),
            )

    elif method == "dpm_solver_pp":

        def sample(score_fn, key, shape):
            return sampling.dpm_solver_pp_sample(
                sde,
                score_fn,
                key,
                shape,
                num_steps=s.get("num_steps", None) or 20,
                order=s.get("dpm_order", 2),
                eps=s.get("eps", 1e-3),
            )

    elif method == "dpm_solver":

        def sample(score_fn, key, shape):
            return sampling.dpm_solver_sample(
                sde,
                score_fn,
                key,
                shape,
                nfe=s.get("num_steps", None) or 20,
                order=s.get("dpm_order", 2),
                eps=s.get("eps", 1e-3),
            )

    elif method == "dpm_solver_adaptive":

        def sample(score_fn, key, shape):
            return sampling.dpm_solver_adaptive_sample(
                sde,
                score_fn,
                key,
                shape,
                order=s.get("dpm_order", 2),
                rtol=s.get("dpm_rtol", 0.05),
                atol=s.get("dpm_atol", 0.0078),
                eps=s.get("eps", 1e-3),
            )

    elif method == "sde_adaptive":

        def sample(score_fn, key, shape):
            return sampling.sde_adaptive_sample(
                sde,
                score_fn,
                key,
                shape,
                rtol=s.get("sde_rtol", 0.05),
                atol=s.get("sde_atol", 0.05),
                eps=s.get("eps", 1e-3),
                denoise=s.noise_removal,
            )

    else:
        raise ConfigError(
            f"Unknown config.sampling.method={s.method!r}; use one of {', '.join(SAMPLER_METHODS)}."
        )
    return sample


def image_source_from_config(data_config, split: str):
    """The :class:`~scoresde_jax.data.ImageSource` of ``split`` ("train" or "test") described by
    ``config.data``: ``dataset``, ``image_size``, ``num_channels`` and optionally ``source``
    (default "auto"), ``path``, ``data_dir`` and ``category`` (see
    :func:`scoresde_jax.data.open_image_source`).

    Local sources are read-only, so one opened for the same arguments (and unchanged files) is
    reused: the start-up checks open the data once and the run that follows reads the same
    object.
    """
    d = data_config
    kwargs = dict(
        dataset=d.dataset,
        split=split,
        image_size=d.image_size,
        num_channels=d.num_channels,
        source=d.get("source", "auto"),
        path=d.get("path"),
        data_dir=d.get("data_dir"),
        category=d.get("category"),
    )
    if not kwargs["path"]:  # TFDS: opening is cheap, and its data can change under mocks
        from scoresde_jax.data import open_image_source

        return open_image_source(**kwargs)
    return _open_local_source(_path_signature(kwargs["path"]), **kwargs)


def _path_signature(path) -> tuple:
    """Size and modification time of the data path: a changed file is opened afresh."""
    path = os.path.expanduser(path)
    try:
        st = os.stat(path)
        entries = ()
        if os.path.isdir(path):  # the files inside (a folder's own time misses their edits)
            entries = tuple(
                (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path)
            )
    except OSError:
        return (path,)
    return (path, st.st_size, st.st_mtime_ns, entries)


@functools.lru_cache(maxsize=4)
def _open_local_source(signature: tuple, **kwargs):
    from scoresde_jax.data import open_image_source

    return open_image_source(**kwargs)
