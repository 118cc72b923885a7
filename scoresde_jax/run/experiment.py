"""Configs -> library objects: each ``*_from_config`` reads one config section and calls a
library constructor; :class:`Experiment` holds the SDE, network, optimizer, loss and mesh."""

from __future__ import annotations

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from scoresde_jax import sampling
from scoresde_jax.core import losses
from scoresde_jax.core.mesh import batch_sharding, make_data_mesh, replicated
from scoresde_jax.core.odeint import ODEOptions
from scoresde_jax.core.score import get_score_fn
from scoresde_jax.core.score_matching import EXACT_TRACE_MAX_DIM
from scoresde_jax.core.sde import SDE, get_sde
from scoresde_jax.data import open_image_source
from scoresde_jax.errors import ConfigError, MissingCheckpointError
from scoresde_jax.models.ddpm import DDPM
from scoresde_jax.models.mlp import MLPScore
from scoresde_jax.models.ncsnpp import NCSNpp
from scoresde_jax.models.ncsnv2 import ARCHITECTURES, NCSN, NCSNv2
from scoresde_jax.run.checkpoint import Checkpointer
from scoresde_jax.run.state import init_state, make_optimizer


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
    """The network of ``config.model.name`` (see :data:`NETWORKS`)."""
    name = config.model.name
    if name not in NETWORKS:
        raise ConfigError(f"Unknown config.model.name={name!r}; choose one of {sorted(NETWORKS)}.")
    return NETWORKS[name](config)


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
    """``config.training.loss`` with its options; exact-trace ISM of more than
    ``EXACT_TRACE_MAX_DIM`` dimensions is refused before any compilation."""
    t = config.training
    loss = str(t.get("loss", "dsm")).lower()
    exact_trace = t.get("ism_exact_trace", True)
    if loss == "ism" and exact_trace:
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


def _eps(sampling_config) -> float:
    return sampling_config.get("eps", 1e-3)


def _dpm(sampling_config) -> dict:
    return dict(order=sampling_config.get("dpm_order", 2), eps=_eps(sampling_config))


def _annealed_langevin(sampling_config) -> dict:
    s = sampling_config
    return dict(
        num_levels=s.get("langevin_num_levels", 10),
        n_steps_each=s.get("langevin_steps_each", 100),
        step_size=s.get("langevin_step_size", 2e-5),
        denoise=s.noise_removal,
    )


def _langevin(sampling_config) -> dict:
    """As many steps at the single level ``t = eps`` as NCSN's annealed ``levels x steps``."""
    a = _annealed_langevin(sampling_config)
    n_steps = a["num_levels"] * a["n_steps_each"]
    return dict(
        step_size=a["step_size"], n_steps=n_steps, t=_eps(sampling_config), denoise=a["denoise"]
    )


def _pc(sampling_config) -> dict:
    s = sampling_config
    return dict(
        predictor=s.predictor,
        corrector=s.corrector,
        snr=s.snr,
        n_steps=s.n_steps_each,
        denoise=s.noise_removal,
        eps=_eps(s),
        num_steps=s.get("num_steps", None),
        probability_flow=s.get("probability_flow", False),
    )


def _ode(sampling_config) -> dict:
    s = sampling_config
    rtol, atol, solver = s.get("rtol", 1e-5), s.get("atol", 1e-5), s.get("ode_solver", "tsit5")
    return dict(
        denoise=s.noise_removal,
        options=ODEOptions(eps=_eps(s), rtol=rtol, atol=atol, solver=solver),
    )


# config.sampling.method -> (library sampler, its keyword arguments read from config.sampling);
# num_steps defaults to 18 for edm and 20 for the DPM-Solvers.
SAMPLERS = {
    "pc": (sampling.pc_sample, _pc),
    "ode": (sampling.ode_sample, _ode),
    "edm": (
        sampling.edm_sample,
        lambda sampling_config: dict(
            num_steps=sampling_config.get("num_steps", None) or 18,
            churn=sampling_config.get("edm_churn", 0.0),
        ),
    ),
    "dpm_solver_pp": (
        sampling.dpm_solver_pp_sample,
        lambda sampling_config: dict(
            num_steps=sampling_config.get("num_steps", None) or 20, **_dpm(sampling_config)
        ),
    ),
    "dpm_solver": (
        sampling.dpm_solver_sample,
        lambda sampling_config: dict(
            nfe=sampling_config.get("num_steps", None) or 20, **_dpm(sampling_config)
        ),
    ),
    "dpm_solver_adaptive": (
        sampling.dpm_solver_adaptive_sample,
        lambda sampling_config: dict(
            rtol=sampling_config.get("dpm_rtol", 0.05),
            atol=sampling_config.get("dpm_atol", 0.0078),
            **_dpm(sampling_config),
        ),
    ),
    "sde_adaptive": (
        sampling.sde_adaptive_sample,
        lambda sampling_config: dict(
            rtol=sampling_config.get("sde_rtol", 0.05),
            atol=sampling_config.get("sde_atol", 0.05),
            eps=_eps(sampling_config),
            denoise=sampling_config.noise_removal,
        ),
    ),
    "langevin": (sampling.langevin_sample, _langevin),
    "annealed_langevin": (sampling.annealed_langevin_sample, _annealed_langevin),
}


def sampler_from_config(sampling_config, sde: SDE):
    """``sample(score_fn, key, shape) -> SampleResult`` of ``config.sampling.method`` (see
    :data:`SAMPLERS`) with its options from ``config.sampling``."""
    method = sampling_config.method.lower()
    if method not in SAMPLERS:
        raise ConfigError(
            f"Unknown config.sampling.method={sampling_config.method!r}; use one of "
            f"{', '.join(SAMPLERS)}."
        )
    sampler, options = SAMPLERS[method]
    return functools.partial(sampler, sde, **options(sampling_config))


def image_source_from_config(data_config, split: str):
    """The :class:`~scoresde_jax.data.ImageSource` of ``split`` described by ``config.data``.

    A local source opened for the same arguments (and unchanged files) is reused, so the start-up
    checks and the run that follows open the data once."""
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
    return open_image_source(**kwargs)


class ReplicatedState:
    """A replicated ``TrainState`` of ``self.model`` and ``self.optimizer`` over ``self.mesh``;
    subclasses set those, ``data_shape`` and ``init_key``, then call :meth:`_setup_state`."""

    def _setup_state(self) -> None:
        def init(key):
            x = jnp.zeros((1, *self.data_shape), jnp.float32)
            params = self.model.init(key, x, jnp.ones((1,), jnp.float32))
            return init_state(params, self.optimizer)

        self._init = init
        self.abstract_state = jax.eval_shape(init, self.init_key)
        self.state_sharding = jax.tree.map(lambda _: replicated(self.mesh), self.abstract_state)

    def init_state(self):
        """Parameters created directly with their (replicated) shardings."""
        return jax.jit(self._init, out_shardings=self.state_sharding)(self.init_key)

    def batch_sharding(self, batch_axis: int = 0) -> NamedSharding:
        return batch_sharding(self.mesh, batch_axis)

    def abstract_target(self):
        """Shapes, dtypes and shardings of the state: the restore target."""
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self.abstract_state,
            self.state_sharding,
        )


class Experiment(ReplicatedState):
    """Everything built from a config: SDE, network, optimizer, loss, mesh, abstract state."""

    def __init__(self, config):
        self.config = config
        self.sde = sde_from_config(config)
        self.model = model_from_config(config)
        self.optimizer = optimizer_from_config(config.optim)
        self.loss_fn = loss_from_config(config, self.sde)
        self.mesh = make_data_mesh(config.get("num_devices", None))
        self.data_shape = data_shape(config)
        self.continuous = config.training.continuous
        key = jax.random.PRNGKey(config.seed)
        self.init_key, self.train_key, self.eval_key = jax.random.split(key, 3)
        self._setup_state()

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 3

    def score_fn(self, params):
        model_fn = lambda x, labels: self.model.apply(params, x, labels, train=False)
        return get_score_fn(self.sde, model_fn, continuous=self.continuous)

    def checkpoint_meta(self) -> dict:
        """The network's own noise levels (``config.model.noise_levels``), saved with the state."""
        levels = getattr(self.model, "noise_levels", None)
        if levels is None:
            return {}
        return {"noise_levels": list(levels), "noise_levels_file": self.config.model.noise_levels}

    def check_restored(self, restored) -> None:
        """Refuses a checkpoint whose recorded noise levels differ from the network's."""
        recorded = restored.meta.get("noise_levels")
        ours = getattr(self.model, "noise_levels", None)
        if recorded is None:
            return
        if ours is None or len(ours) != len(recorded) or not np.allclose(ours, recorded, rtol=1e-7):
            path = restored.meta.get("noise_levels_file") or "<workdir>/noise_levels.npy"
            raise ConfigError(
                f"The checkpoint {restored.path} uses its own {len(recorded)} noise levels "
                f"({recorded[0]:.6g} ... {recorded[-1]:.6g}), which this config's network does "
                f"not: add --config.model.noise_levels={path} "
                f"--config.model.num_scales={len(recorded)} to the command."
            )


def data_shape(config) -> tuple[int, ...]:
    """Shape of one example: ``(dim,)`` for vector data, ``(H, W, C)`` (NHWC) for images."""
    if config.data.get("dim", None):
        return (config.data.dim,)
    return (config.data.image_size, config.data.image_size, config.data.num_channels)


def build_experiment(config) -> Experiment:
    return Experiment(config)


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-host) global array, on every process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def check_workdir(workdir: str, error: type[Exception] = ValueError) -> None:
    """Work directories are filesystem paths (logs are appended and pictures written there)."""
    if "://" in str(workdir):
        raise error(
            f"--workdir={workdir!r} is a URL; use a filesystem path every host can see (NFS, "
            "Filestore, or a bucket mounted with gcsfuse, e.g. /mnt/bucket/run)."
        )


def restore_checkpoint(config, workdir: str, step: int | None = None):
    """``(experiment, RestoredCheckpoint)`` of ``step`` (default: the newest that verifies)."""
    check_workdir(workdir)
    exp = build_experiment(config)
    restored = Checkpointer(workdir, read_only=True).restore_verified(exp.abstract_target(), step)
    exp.check_restored(restored)
    return exp, restored


def restore_experiment(config, workdir: str, step: int | None = None):
    """``(experiment, state, step)`` of checkpoint ``step`` (default: the newest readable one)."""
    exp, restored = restore_checkpoint(config, workdir, step)
    return exp, restored.state, restored.step


def checkpoint_steps(config, workdir: str) -> list[int | None]:
    """The steps ``--mode eval`` evaluates (``config.eval.checkpoints``): ``"latest"`` (``[None]``),
    ``"all"``, ``"snapshots"`` (``k * snapshot_freq``, ``begin_ckpt <= k <= end_ckpt``, as in the
    original code) or a comma-separated list."""
    ckpt = Checkpointer(workdir, read_only=True)
    saved = ckpt.all_steps()
    if not saved:
        raise MissingCheckpointError(
            f"No checkpoint in {ckpt.directory}. Train first with --mode train and the same "
            "--workdir."
        )
    which = str(config.eval.get("checkpoints", "latest")).strip().lower()
    if which == "latest":
        return [None]
    if which == "all":
        return saved
    if which == "snapshots":
        freq = config.training.snapshot_freq
        wanted = range(config.eval.begin_ckpt, config.eval.end_ckpt + 1)
        steps = [k * freq for k in wanted if k * freq in saved]
        if not steps:
            raise MissingCheckpointError(
                f"No snapshot k * {freq} for k in [{config.eval.begin_ckpt}, "
                f"{config.eval.end_ckpt}] in {ckpt.directory}; saved steps: {saved}."
            )
        return steps
    try:
        steps = [int(s) for s in which.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"eval.checkpoints={which!r}: use 'latest', 'all', 'snapshots' or a comma-separated "
            "list of steps."
        ) from None
    missing = [s for s in steps if s not in saved]
    if missing:
        raise MissingCheckpointError(f"No checkpoint for steps {missing}; saved steps: {saved}.")
    return steps


def parse_floats(text, field: str) -> list[float]:
    """``"0.5, 1,2"`` -> ``[0.5, 1.0, 2.0]``; an error naming the config ``field`` otherwise."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"{field}={text!r}: use comma-separated numbers, e.g. '0.5,0.75,1.0'"
        ) from None
    if not values:
        raise ValueError(f"{field}={text!r} holds no numbers; use e.g. '0.5,0.75,1.0'")
    return values


def dtype_from_config(model_config):
    """The compute dtype named by ``config.model.dtype`` (optional, default ``"float32"``)."""
    name = str(model_config.get("dtype", "float32"))
    if name not in _DTYPES:
        raise ValueError(f"Unknown model.dtype={name!r}; use one of {sorted(_DTYPES)}.")
    return _DTYPES[name]


def noise_levels_from_config(model_config) -> tuple[float, ...] | None:
    """The levels (index 0 the largest) of the ``.npy``/``.json`` file ``config.model.noise_levels``
    that replace the geometric sigmas (written by ``convert --noise_levels=checkpoint``)."""
    path = model_config.get("noise_levels", None)
    if not path:
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"config.model.noise_levels={path!r}: no such file.")
    if str(path).endswith(".json"):
        with open(path) as f:
            levels = np.asarray(json.load(f), np.float64)
    else:
        levels = np.load(path).astype(np.float64)
    levels = levels.reshape(-1)
    n = model_config.num_scales
    if len(levels) != n or not np.all(np.isfinite(levels)) or not np.all(levels > 0):
        raise ConfigError(
            f"config.model.noise_levels={path!r} holds {len(levels)} levels; it needs "
            f"num_scales={n} positive values (set --config.model.num_scales={len(levels)} if "
            "the file is right)."
        )
    return tuple(float(v) for v in levels)


def _image_net_fields(config) -> dict:
    """The fields every image network takes: width, data geometry, noise levels, dtype."""
    m, d = config.model, config.data
    return dict(
        nf=m.nf,
        centered=d.centered,
        image_size=d.image_size,
        sigma_min=m.sigma_min,
        sigma_max=m.sigma_max,
        num_scales=m.num_scales,
        dtype=dtype_from_config(m),
        noise_levels=noise_levels_from_config(m),
    )


def _unet_fields(config) -> dict:
    """The fields DDPM and NCSN++ share: the above and the U-Net shape."""
    m = config.model
    return dict(
        _image_net_fields(config),
        num_channels=config.data.num_channels,
        ch_mult=tuple(m.ch_mult),
        num_res_blocks=m.num_res_blocks,
        attn_resolutions=tuple(m.attn_resolutions),
        dropout=m.dropout,
        resamp_with_conv=m.resamp_with_conv,
        conditional=m.conditional,
        scale_by_sigma=m.scale_by_sigma,
    )


def ddpm_from_config(config) -> DDPM:
    return DDPM(nonlinearity=config.model.get("nonlinearity", "swish"), **_unet_fields(config))


def mlp_from_config(config) -> MLPScore:
    m = config.model
    return MLPScore(
        hidden=tuple(m.hidden),
        embedding=m.embedding,
        embed_dim=m.embed_dim,
        fourier_scale=m.fourier_scale,
        scale_by_sigma=m.scale_by_sigma,
    )


def ncsnpp_from_config(config) -> NCSNpp:
    """The Fourier embedding needs continuous training, as in the reference."""
    m = config.model
    if m.embedding_type.lower() == "fourier" and not config.training.get("continuous", True):
        raise ValueError(
            "model.embedding_type='fourier' embeds noise levels and needs training.continuous=True"
            "; use embedding_type='positional' for discrete time steps."
        )
    return NCSNpp(
        fir=m.fir,
        fir_kernel=tuple(m.fir_kernel),
        skip_rescale=m.skip_rescale,
        resblock_type=m.resblock_type,
        progressive=m.progressive,
        progressive_input=m.progressive_input,
        progressive_combine=m.progressive_combine,
        attention_type=m.get("attention_type", "ddpm"),
        embedding_type=m.embedding_type,
        fourier_scale=m.get("fourier_scale", 16.0),
        init_scale=m.init_scale,
        conv_size=m.get("conv_size", 3),
        nonlinearity=m.nonlinearity,
        **_unet_fields(config),
    )


def ncsnv2_from_config(config) -> NCSNv2 | NCSN:
    """:class:`NCSN` (``model.name == "ncsn"``) or :class:`NCSNv2` (``ncsnv2_*``)."""
    m, d = config.model, config.data
    common = dict(
        _image_net_fields(config),
        nonlinearity=m.get("nonlinearity", "elu"),
        interpolation=m.get("interpolation", "bilinear"),
        num_channels=d.get("num_channels", d.get("channels", 3)),
    )
    if m.name == "ncsn":
        return NCSN(**common)
    if m.name in ARCHITECTURES:
        return NCSNv2(architecture=m.name, scale_by_sigma=m.get("scale_by_sigma", True), **common)
    raise ValueError(
        f"config.model.name={m.name!r} is not an NCSN model; "
        f"choose 'ncsn' or one of {sorted(ARCHITECTURES)}."
    )


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

NETWORKS = {
    "mlp": mlp_from_config,
    "ncsnpp": ncsnpp_from_config,
    "ddpm": ddpm_from_config,
    "ncsn": ncsnv2_from_config,
    **dict.fromkeys(ARCHITECTURES, ncsnv2_from_config),
}
"""``config.model.name`` -> ``builder(config) -> nn.Module``."""
