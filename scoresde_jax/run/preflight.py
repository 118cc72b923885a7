"""Checks of a config and work directory before any heavy work: :func:`check` raises the first
problem (names, ranges, devices, data files, checkpoint, writable workdir) as a UserError."""

from __future__ import annotations

import difflib
import importlib.util
import os
import tempfile
from collections.abc import Iterable

from scoresde_jax.errors import ConfigError, MissingCheckpointError, WorkdirError


def config_file(spec: str) -> str:
    """The file of a ``--config`` value (``path`` or ``path:argument``)."""
    if os.path.exists(spec) or ":" not in spec:
        return spec
    return spec.rsplit(":", 1)[0]


def load_config(spec: str):
    """The config of a config file as the flag would load it, overrides aside."""
    path = config_file(spec)
    arg = spec[len(path) + 1 :] if spec != path else None
    module_spec = importlib.util.spec_from_file_location("_scoresde_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def check_choice(field: str, value, choices: Iterable[str]) -> str:
    """``value`` lower-cased if among ``choices``, else a ConfigError naming the closest."""
    choices = list(choices)
    text = str(value).strip().lower()
    if text in choices:
        return text
    close = difflib.get_close_matches(text, choices, n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise ConfigError(
        f"config.{field}={value!r} is not valid{hint}; use one of {', '.join(map(repr, choices))}."
    )


def _positive(config, field: str, *, allow_none: bool = False, integer: bool = True) -> None:
    section, name = field.split(".")
    node = config.get(section)
    if node is None or name not in node or (node[name] is None and allow_none):
        return
    value = node[name]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"config.{field}={value!r}: must be {kind}.")


def check_frequencies(tc) -> None:
    """``training.n_jitted_steps`` must divide every frequency (the loop sees only those steps)."""
    n_jit = tc.n_jitted_steps
    freqs = {
        "snapshot_freq": tc.snapshot_freq,
        "snapshot_freq_for_preemption": tc.get("snapshot_freq_for_preemption", tc.snapshot_freq),
        "log_freq": tc.log_freq,
        "eval_freq": tc.get("eval_freq", tc.log_freq),
        "n_iters": tc.n_iters,
    }
    bad = {k: v for k, v in freqs.items() if n_jit >= 1 and v % n_jit}
    if n_jit < 1 or bad:
        raise ConfigError(
            f"config.training.n_jitted_steps={n_jit} must divide "
            f"{', '.join(f'training.{k} ({v})' for k, v in bad.items())}; "
            "change those fields or n_jitted_steps."
        )


def check_config(config, mode: str) -> None:
    """Names and ranges of the config fields ``mode`` reads."""
    from scoresde_jax.core.odeint import SOLVERS
    from scoresde_jax.core.sde import SDES
    from scoresde_jax.models import MODELS
    from scoresde_jax.run.experiment import SAMPLERS
    from scoresde_jax.sampling import CORRECTORS, PREDICTORS

    t, s, e, d, m = config.training, config.sampling, config.eval, config.data, config.model
    check_choice("training.sde", t.sde, [*SDES, "ve", "vp", "subvp"])
    check_choice("training.loss", t.get("loss", "dsm"), ["dsm", "ism", "ssm", "ssm_vr"])
    check_choice("model.name", m.name, MODELS)
    check_choice("sampling.method", s.method, SAMPLERS)
    check_choice("sampling.predictor", s.predictor, PREDICTORS)
    check_choice("sampling.corrector", s.corrector, CORRECTORS)
    check_choice(
        "sampling.task", s.get("task", "generate"), ["generate", "class", "inpaint", "colorize"]
    )
    for field in ("sampling.ode_solver", "eval.ode_solver", "latent.ode_solver"):
        section, name = field.split(".")
        if section in config and name in config[section]:
            check_choice(field, config[section][name], SOLVERS)
    if "probe_noise" in e:
        check_choice("eval.probe_noise", e.probe_noise, ["rademacher", "gaussian"])
    if "weights" in e:
        check_choice("eval.weights", e.weights, ["ema", "raw"])
    if "dtype" in m:
        check_choice("model.dtype", m.dtype, ["float32", "bfloat16", "float16"])
    check_choice("optim.optimizer", config.optim.optimizer, ["adam", "adamw"])
    kind = check_choice("data.dataset_kind", d.get("dataset_kind", "image"), ["image", "toy"])
    if kind == "toy":
        from scoresde_jax.data import TOY_DATASETS

        check_choice("data.dataset", d.dataset, TOY_DATASETS)
    else:
        from scoresde_jax.data import SOURCES

        check_choice("data.source", d.get("source", "auto"), ["auto", *SOURCES])
        if d.num_channels not in (1, 3):
            raise ConfigError(f"config.data.num_channels={d.num_channels!r}: use 1 or 3.")
        _positive(config, "data.image_size")
        for split in str(e.get("bpd_dataset", "test")).split(","):
            check_choice("eval.bpd_dataset", split, ["test", "train"])
    for section, names in (
        ("training", "batch_size n_jitted_steps snapshot_freq log_freq snapshot_samples"),
        ("eval", "batch_size num_samples num_repeats num_probes"),
        ("sampling", "batch_size n_steps_each"),
        ("classifier", "batch_size"),
    ):
        for name in names.split():
            _positive(config, f"{section}.{name}")
    for field in ("eval.max_examples", "sampling.num_steps", "training.max_to_keep"):
        _positive(config, field, allow_none=True)
    for field in ("eval.rtol", "eval.atol", "sampling.rtol", "sampling.atol", "optim.lr"):
        _positive(config, field, integer=False)
    if t.n_iters < 0:
        raise ConfigError(f"config.training.n_iters={t.n_iters!r}: must be 0 or more.")
    if mode == "train":
        check_frequencies(t)
    for field in ("fid_stats_path", "inception_weights"):
        path = e.get(field, None)
        if path and not os.path.isfile(os.path.expanduser(path)):
            raise ConfigError(f"config.eval.{field}={path!r}: no such file.")


def _check_devices(config, mode: str) -> None:
    import jax

    visible = jax.device_count()
    wanted = config.get("num_devices", None)
    if wanted is not None and not 1 <= wanted <= visible:
        raise ConfigError(
            f"config.num_devices={wanted}: {visible} device(s) are visible; use 1..{visible} or "
            "leave it unset for all of them."
        )
    n = wanted or visible
    field = {"train": "training.batch_size", "train_classifier": "classifier.batch_size"}.get(mode)
    if field:
        section, name = field.split(".")
        batch = config[section][name]
        if batch % n:
            raise ConfigError(
                f"config.{field}={batch} does not split over the {n} devices; use a "
                f"multiple of {n} (e.g. {max(n, batch - batch % n)}), or set config.num_devices."
            )


def _splits(config, mode: str) -> tuple[str, ...]:
    e, s, lt = config.eval, config.sampling, config.get("latent", {})
    if mode in ("train", "train_classifier"):
        return ("train", "test")
    if mode == "stats":
        return (str(e.get("stats_split", "train")),)
    if mode == "eval":
        splits = []
        if e.get("enable_loss", True):
            splits.append("test")
        if e.get("enable_bpd", False):
            splits += [x.strip() for x in str(e.get("bpd_dataset", "test")).split(",")]
        return tuple(dict.fromkeys(splits))
    if mode in ("encode", "interpolate"):
        return (str(lt.get("split", "test")),)
    if mode == "sample" and str(s.get("task", "generate")).lower() in ("inpaint", "colorize"):
        return () if s.get("task_inputs", None) else (str(s.get("task_split", "test")),)
    return ()


def _check_data(config, mode: str) -> None:
    if config.data.get("dataset_kind", "image") == "toy":
        return
    from scoresde_jax.run import experiment

    for split in _splits(config, mode):
        experiment.image_source_from_config(config.data, split)  # raises with the file named


def _check_checkpoint(workdir: str) -> None:
    folder = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(folder) or not any(n.isdigit() for n in os.listdir(folder)):
        raise MissingCheckpointError(
            f"No checkpoint in {folder}. Train first with --mode train and the same --workdir, "
            "or convert one with `python -m scoresde_jax.convert`."
        )


def check(config, workdir: str, mode: str, *, needs_checkpoint: bool = False) -> None:
    """All checks for running ``mode`` on ``workdir``."""
    check_config(config, mode)
    if needs_checkpoint:
        _check_checkpoint(workdir)
    _check_devices(config, mode)
    _check_data(config, mode)
    from scoresde_jax.run.experiment import check_workdir

    check_workdir(workdir, WorkdirError)
    try:
        os.makedirs(os.path.abspath(workdir), exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=os.path.abspath(workdir), prefix=".write-test-"):
            pass
    except OSError as e:
        raise WorkdirError(f"--workdir={workdir}: cannot write there ({e.strerror}).") from None
