"""The command lines: ``python main.py --config CONFIG --workdir DIR --mode MODE`` (:data:`MODES`),
the converter and the feature classifiers. ``--help``, the config file and every ``--config.a.b``
override are checked before JAX is imported; then :mod:`scoresde_jax.run.preflight` checks the
values and the mode runs holding the lock of the directory it writes (exit statuses: the usage)."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable

from scoresde_jax.errors import EXIT_USER_ERROR, ConfigError, StoppedBySignal, UserError
from scoresde_jax.run import compile_cache
from scoresde_jax.run.preflight import config_file, load_config

log = logging.getLogger("scoresde_jax")

TRACEBACK_ENV = "SCORESDE_TRACEBACK"


def _train(config, workdir):
    import jax

    from scoresde_jax.run.trainer import train

    step = int(jax.device_get(train(config, workdir).step))
    print(f"Training done: step {step}; checkpoints in {os.path.join(workdir, 'checkpoints')}")


def _function(target: str | Callable) -> Callable:
    """``target`` itself, or the function ``"module:name"`` of :mod:`scoresde_jax.modes`
    (imported only when the mode runs)."""
    if callable(target):
        return target
    module, name = target.split(":")
    return getattr(importlib.import_module(f"scoresde_jax.modes.{module}"), name)


SAMPLE_TASKS = {
    "generate": "evaluate:sample",
    "inpaint": "tasks:inpaint",
    "colorize": "tasks:colorize",
    "class": "classifier:sample_class",
}
"""``config.sampling.task`` of ``--mode sample`` -> the function of :mod:`scoresde_jax.modes`."""


def sample(config, workdir):
    """``--mode sample``: the task ``config.sampling.task`` (default ``"generate"``)."""
    task = str(config.sampling.get("task", "generate")).strip().lower()
    if task not in SAMPLE_TASKS:
        raise ConfigError(
            f"Unknown config.sampling.task={task!r}; choose one of {sorted(SAMPLE_TASKS)} "
            "('generate': unconditional samples, the default)."
        )
    return _function(SAMPLE_TASKS[task])(config, workdir)


@dataclasses.dataclass(frozen=True)
class Mode:
    """One command: ``target(config, workdir) -> report dict or None`` (see :func:`_function`).
    ``lock``: the sub-directory of the work directory the mode writes and
    locks (``""`` the work directory; ``None``: the function takes its own lock);
    ``needs_checkpoint``: the mode reads a trained (or converted) checkpoint."""

    target: str | Callable
    help: str
    lock: str | None = None
    needs_checkpoint: bool = False


MODES: dict[str, Mode] = {
    "train": Mode(_train, "train the score model (resumes from the newest checkpoint)"),
    "eval": Mode(
        "evaluate:evaluate", "loss, bits/dim and sample quality of checkpoints", None, True
    ),
    "sample": Mode(
        sample,
        "samples (or a controllable-generation task) from the newest checkpoint",
        "samples",
        True,
    ),
    "stats": Mode(
        "evaluate:reference_stats", "reference feature statistics of a dataset for FID/KID", "stats"
    ),
    "train_classifier": Mode(
        "classifier:train_classifier",
        "the noise-conditional classifier of class-conditional sampling",
    ),
    "encode": Mode("latent:encode_mode", "probability-flow latents of data", "latent", True),
    "interpolate": Mode("latent:interpolate_mode", "interpolation between latents", "latent", True),
    "temperature": Mode(
        "latent:temperature_mode", "samples at scaled prior temperatures", "latent", True
    ),
    "toy_figures": Mode(
        "figures:toy_figures",
        "score fields and trajectories of a 2-D toy model",
        "figures",
        True,
    ),
}

_USAGE = """\
usage: python main.py --config CONFIG --workdir DIR [--mode MODE] [--config.SECTION.FIELD=VALUE ...]

  --config FILE      an experiment config file (configs/...)
  --workdir DIR      where checkpoints, logs, samples and reports go
  --mode MODE        one of the modes below (default: train)
  --multihost        join a multi-host job with jax.distributed (same command on every host)
  --coordinator_address HOST:PORT, --num_processes N, --process_id I
                     a multi-host job set up by hand
  --traceback        show full tracebacks of errors (also: SCORESDE_TRACEBACK=1)
  --compilation_cache DIR|off
                     JAX's persistent compilation cache, so reruns skip compiling (default:
                     $SCORESDE_COMPILATION_CACHE, else ~/.cache/scoresde_jax/jax)

Any config field can be overridden, e.g. --config.training.n_iters=2000.

modes:
{modes}

Exit status: 0 done, 2 a problem with the input (the message says what to change),
143 / 130 stopped by SIGTERM / SIGINT after saving (run the same command to resume).
"""


def usage() -> str:
    width = max(len(m) for m in MODES)
    lines = "\n".join(f"  {name:<{width}}  {mode.help}" for name, mode in MODES.items())
    return _USAGE.format(modes=lines)


def _flag_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def _unknown_override(config, argv: list[str]) -> str | None:
    """A message for the first ``--config.*`` override that names no field of ``config``."""
    for arg in argv:
        m = re.match(r"^--config\.([^=]+)", arg)
        if not m:
            continue
        node, walked = config, ["config"]
        for part in m.group(1).split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                section = ".".join(walked)
                close = difflib.get_close_matches(part, keys, n=3, cutoff=0.5)
                hint = (
                    f"did you mean {', '.join(f'{section}.{c}' for c in close)}?"
                    if close
                    else f"its fields are: {', '.join(sorted(keys))}."
                    if keys
                    else f"{section} is a value, not a section."
                )
                return f"{arg.split('=')[0]}: {section} has no field {part!r}; {hint}"
            node = node[part]
            walked.append(part)
    return None


def _fail(message: str, code: int = EXIT_USER_ERROR):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def check_config_arg(argv: list[str]) -> None:
    """``--config`` is given and names an existing file (else a message and exit 2)."""
    spec = _flag_value(argv, "config")
    if spec is None:
        _fail("--config is required: an experiment config file, e.g. configs/toy/gmm.py.")
    path = config_file(spec)
    if not os.path.isfile(path):
        near = ""
        folder = os.path.dirname(path) or "."
        if os.path.isdir(folder):
            names = [n for n in os.listdir(folder) if n.endswith(".py") and not n.startswith("_")]
            close = difflib.get_close_matches(os.path.basename(path), names, n=3, cutoff=0.5)
            if close:
                near = f" Did you mean {', '.join(os.path.join(folder, c) for c in close)}?"
        _fail(f"--config={spec}: no such config file.{near}")


def _precheck_argv(argv: list[str]) -> None:
    check_config_arg(argv)
    if _flag_value(argv, "workdir") is None:
        _fail("--workdir is required: the directory for checkpoints, logs and reports.")
    mode = _flag_value(argv, "mode")
    if mode is not None and mode not in MODES:
        close = difflib.get_close_matches(mode, list(MODES), n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        _fail(f"--mode={mode}: unknown mode; use one of {', '.join(MODES)}.{hint}")


def _define(specs, flag_values) -> None:
    """Defines the flags ``(kind, name, default, [enum values,] help)`` of ``specs``."""
    from absl import flags

    for kind, name, default, *rest in specs:
        getattr(flags, f"DEFINE_{kind}")(name, default, *rest, flag_values=flag_values)


def _config_and(specs, required: tuple[str, ...] = ()):
    """absl's flags with ``--config`` and ``specs`` (:func:`_define`), defined once."""
    from absl import flags
    from ml_collections import config_flags

    if specs[0][1] not in flags.FLAGS:
        config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
        _define(specs, flags.FLAGS)
        if required:
            flags.mark_flags_as_required(list(required))
    return flags.FLAGS


def _main_flags() -> tuple:
    return (
        ("string", "workdir", None, "Directory for checkpoints, logs, samples and reports."),
        ("enum", "mode", "train", list(MODES), "What to run (see --help)."),
        (
            "bool",
            "multihost",
            False,
            "Join a multi-host job with jax.distributed (one process per host, same command on "
            "each).",
        ),
        ("string", "coordinator_address", None, "host:port of process 0 (manual multi-host)."),
        ("integer", "num_processes", None, "Number of processes (manual multi-host)."),
        ("integer", "process_id", None, "This process's index (manual multi-host)."),
        ("bool", "traceback", False, f"Show full tracebacks (also ${TRACEBACK_ENV}=1)."),
        (
            "string",
            "compilation_cache",
            None,
            "Directory of JAX's persistent compilation cache, or 'off' (default: "
            f"${compile_cache.ENV}, else {compile_cache.default_dir()}).",
        ),
    )


def parse_flags(argv: list[str], specs, required: tuple[str, ...] = ()) -> list[str]:
    """``FLAGS(argv)`` with the flags of :func:`_config_and`; a bad flag or config override
    becomes one message and exit 2."""
    from absl import flags

    FLAGS = _config_and(specs, required)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(f"{e} (see --help).")
    except (KeyError, AttributeError, TypeError, ValueError) as e:
        spec = _flag_value(argv, "config")
        try:
            message = _unknown_override(load_config(spec), argv[1:])
        except Exception:  # noqa: BLE001 - the config file itself is broken: say so below
            message = None
        if message is None:
            message = f"--config={spec}: could not apply the overrides: {e}"
        _fail(message)


def setup_logging() -> None:
    """Our own progress at INFO; library chatter (Orbax logs every save) only when it matters;
    no "Event loop is closed" noise from Orbax's threads at exit."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("scoresde_jax").setLevel(logging.INFO)
    previous = sys.unraisablehook

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
            return
        previous(unraisable)

    sys.unraisablehook = hook


def _traceback_wanted() -> bool:
    from absl import flags

    env = os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return env or ("traceback" in flags.FLAGS and bool(flags.FLAGS["traceback"].value))


_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}


@contextlib.contextmanager
def user_errors():
    """Turns :class:`~scoresde_jax.errors.UserError` (and a full disk) into a message and an
    exit status; everything else propagates with its traceback."""
    try:
        yield
    except StoppedBySignal as e:
        print(f"stopped: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except UserError as e:
        if _traceback_wanted():
            raise
        _fail(str(e), e.exit_code)
    except OSError as e:
        if e.errno not in _WRITE_ERRORS or _traceback_wanted():
            raise
        _fail(
            f"Could not write {e.filename or 'the work directory'}: {_WRITE_ERRORS[e.errno]}. "
            "Checkpoints already on disk are intact; free space (or fix permissions) and run the "
            "same command again."
        )


def run_mode(config, workdir: str, mode: str) -> dict | None:
    """Checks ``config`` for ``mode`` (:func:`scoresde_jax.run.preflight.check`), then runs the mode
    holding the lock of the directory it writes."""
    from scoresde_jax.run import preflight, workdir_lock

    spec = MODES[mode]
    preflight.check(config, workdir, mode, needs_checkpoint=spec.needs_checkpoint)
    if spec.lock is None:
        return _function(spec.target)(config, workdir)
    with workdir_lock.hold(os.path.join(workdir, spec.lock), spec.lock or "workdir", mode=mode):
        return _function(spec.target)(config, workdir)


def _main(argv) -> None:
    del argv
    from absl import flags

    FLAGS = flags.FLAGS
    setup_logging()
    compile_cache.enable(FLAGS.compilation_cache)
    with user_errors():
        config = FLAGS.config
        if config is None:
            raise ConfigError(f"--config={FLAGS['config'].serialize()}: the file did not load.")
        # TensorFlow (only ever used by input pipelines) must never take the accelerators.
        with contextlib.suppress(ImportError):
            import tensorflow as tf

            tf.config.set_visible_devices([], "GPU")
        if FLAGS.multihost or FLAGS.num_processes is not None:
            from scoresde_jax.run.distributed import initialize

            initialize(
                coordinator_address=FLAGS.coordinator_address,
                num_processes=FLAGS.num_processes,
                process_id=FLAGS.process_id,
            )
        report = run_mode(config, FLAGS.workdir, FLAGS.mode)
    if report is not None:
        print(json.dumps(report, indent=2))


def _argv_or_help(argv: list[str] | None, text: str, help_flags: tuple[str, ...]) -> list[str]:
    """``argv`` (default ``sys.argv``); prints ``text`` and exits 0 if it asks for help."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in help_flags for a in argv[1:]):
        print(text)
        raise SystemExit(0)
    return argv


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``main.py``."""
    argv = _argv_or_help(argv, usage(), ("-h", "--help", "-?", "--helpshort", "--helpfull"))
    _precheck_argv(argv[1:])
    from absl import app

    app.run(_main, argv=argv, flags_parser=lambda a: parse_flags(a, _main_flags()))


CONVERT_USAGE = """\
usage: python -m scoresde_jax.convert --config CONFIG --checkpoint FILE --workdir DIR
           [--source torch|flax] [--step N] [--noise_levels config|checkpoint]

Converts a checkpoint of the paper's official code into this package's training state in
DIR/checkpoints; then `python main.py --config CONFIG --workdir DIR --mode sample` (or eval,
or train to fine-tune) uses it.

  --config FILE        the config the checkpoint was trained with, e.g.
                       configs/ve/cifar10_ncsnpp_continuous.py (--config.a.b=v overrides work)
  --checkpoint FILE    score_sde_pytorch: checkpoint_N.pth (read without PyTorch) or a
                       state_dict saved as .npz; score_sde (Flax): its checkpoint file
  --workdir DIR        where checkpoints/ is written (must not hold that step already)
  --source SOURCE      torch (default) or flax
  --step N             save under step N instead of the checkpoint's own step
  --noise_levels WHICH config (default): the network divides by the noise levels of
                       sigma_min, sigma_max and num_scales; a checkpoint whose sigmas buffer
                       differs is refused, naming the values that reproduce it if any.
                       checkpoint: use the checkpoint's own sigmas buffer; it is written to
                       DIR/noise_levels.npy, and every later command on DIR needs
                       --config.model.noise_levels=DIR/noise_levels.npy
  --traceback          full tracebacks of errors (also SCORESDE_TRACEBACK=1)

Exit status: 0 converted; 2 the input cannot be converted (the message says why).
"""

_CONVERT_FLAGS = (
    ("string", "checkpoint", None, "Checkpoint file (.pth/.npz, or a msgpack file)."),
    ("enum", "source", "torch", ["torch", "flax"], "Checkpoint format."),
    ("string", "workdir", None, "Experiment directory (checkpoints/ is written)."),
    ("integer", "step", None, "Save under this step (default: the checkpoint's)."),
    ("enum", "noise_levels", "config", ["config", "checkpoint"], "Noise levels of the network."),
    ("bool", "traceback", False, "Show full tracebacks."),
)


def _convert_main(argv) -> None:
    """``python -m scoresde_jax.convert`` (see :data:`CONVERT_USAGE`)."""
    del argv
    import jax
    import numpy as np
    from absl import flags

    from scoresde_jax.modes import convert

    setup_logging()
    f = flags.FLAGS
    with user_errors():
        try:
            kw = {name: f[name].value for name in ("source", "workdir", "step", "noise_levels")}
            state = convert.convert_checkpoint(f.config, checkpoint=f.checkpoint, **kw)
        except UserError:
            raise
        except (ValueError, ImportError, FileNotFoundError, FileExistsError, KeyError) as e:
            raise convert.ConversionInputError(f"Cannot convert {f.checkpoint}: {e}") from e
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    print(
        f"Converted {f.checkpoint} ({f.source}, step {int(state.step)}, {n:,} parameters) "
        f"into {os.path.join(f.workdir, 'checkpoints')}"
    )


def convert_cli(argv: list[str] | None = None) -> None:
    from absl import app

    argv = _argv_or_help(argv, CONVERT_USAGE, ("-h", "--help", "--helpshort", "--helpfull"))
    check_config_arg(argv[1:])
    parse = lambda a: parse_flags(a, _CONVERT_FLAGS, ("config", "checkpoint", "workdir"))
    app.run(_convert_main, argv=argv, flags_parser=parse)


FEATURE_COMMANDS = ("train", "stats", "eval")
_FEATURE_FLAGS = (
    ("enum", "dataset", None, ["mnist", "cifar10"], "Dataset of the classifier."),
    (
        "string",
        "data_path",
        None,
        "Local data: MNIST IDX folder, CIFAR-10 .npz or python folder (default: TFDS).",
    ),
    ("string", "out", None, "train: weight file (.npz); stats: statistics file."),
    ("string", "stats_out", None, "train: also write test-split statistics here."),
    ("integer", "num_steps", None, "train: steps (default 1500 MNIST, 1200 CIFAR-10)."),
    ("integer", "batch_size", 128, "train: examples per step."),
    ("float", "learning_rate", 2e-3, "train: peak learning rate."),
    ("integer", "seed", 0, "train: seed."),
    ("string", "workdir", None, "train: checkpoints (resumed when run again)."),
    ("string", "classifier", None, "stats/eval: classifier name or weight file."),
    ("enum", "split", "test", ["train", "test"], "stats/eval: split."),
)


def feature_classifier_cli(argv: list[str] | None = None) -> None:
    """``python -m scoresde_jax.feature_classifier {train,stats,eval} --dataset D ...``: the FD
    classifiers' weights, reference statistics and accuracy; ``--help`` lists the flags."""
    from absl import flags

    fv = flags.FlagValues()
    _define(_FEATURE_FLAGS, fv)
    usage = (
        "usage: python -m scoresde_jax.feature_classifier {train,stats,eval} --dataset "
        "{mnist,cifar10} [flags]\n\n" + fv.main_module_help()
    )
    argv = _argv_or_help(argv, usage, ("-h", "--help"))
    try:
        rest = fv(argv)
    except flags.Error as e:
        _fail(f"{e}\n\n{usage}")
    command = rest[1] if len(rest) == 2 else None
    needed = {
        "train": ("dataset", "out"),
        "stats": ("classifier", "dataset", "out"),
        "eval": ("classifier", "dataset"),
    }.get(command)
    if needed is None:
        _fail(f"give one command of {FEATURE_COMMANDS}, got {rest[1:]}\n\n{usage}")
    missing = [f"--{n}" for n in needed if fv[n].value is None]
    if missing:
        _fail(f"{command} needs {', '.join(missing)}\n\n{usage}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from scoresde_jax.modes import feature_classifier as fc

    if command == "train":
        names = ("data_path", "stats_out", "num_steps", "batch_size", "learning_rate", "seed")
        kw = {n: fv[n].value for n in (*names, "workdir")}
        result = fc.train(fv.dataset, fv.out, **kw)
    elif command == "stats":
        result = fc.stats(fv.classifier, fv.dataset, fv.out, split=fv.split, data_path=fv.data_path)
    else:
        result = fc.accuracy(fv.classifier, fv.dataset, split=fv.split, data_path=fv.data_path)
    print(json.dumps(result))
