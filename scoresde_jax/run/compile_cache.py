"""JAX's persistent compilation cache, on by default for the command line.

Compiling a training step takes 20-70 s on a CPU, and every resume, evaluation and sampling run
compiles the same computations again. With the cache, a computation compiled once (same program,
same devices, same XLA flags and versions) is read back from disk instead. The command line turns it
on before anything compiles; library users call :func:`enable` themselves.

Where: ``--compilation_cache=DIR``, else ``$SCORESDE_COMPILATION_CACHE``, else
``$XDG_CACHE_HOME/scoresde_jax/jax`` (``~/.cache/scoresde_jax/jax``). The value ``off`` (flag or
variable) turns it off. A directory that cannot be created or written turns it off with a warning:
the run itself never depends on the cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["ENV", "OFF_VALUES", "default_dir", "enable", "resolve"]

log = logging.getLogger(__name__)

ENV = "SCORESDE_COMPILATION_CACHE"
OFF_VALUES = ("off", "none", "no", "false", "0", "disabled")


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scoresde_jax" / "jax"


def resolve(value: str | None = None) -> Path | None:
    """The cache directory for a flag ``value`` (``None``: not given), or ``None`` when off."""
    if value is None:
        value = os.environ.get(ENV)
    if value is None or value.strip() == "":
        return default_dir()
    if value.strip().lower() in OFF_VALUES:
        return None
    return Path(value).expanduser()


def enable(value: str | None = None, *, min_compile_time_s: float = 1.0) -> Path | None:
    """Points JAX's persistent compilation cache at :func:`resolve` (``value``) and returns the
    directory, or ``None`` when the cache is off or its directory is not writable.

    Args:
        value: a directory, ``"off"``, or ``None`` for ``$SCORESDE_COMPILATION_CACHE`` or the
            default directory.
        min_compile_time_s: computations that compile faster than this are not stored.
    """
    import jax

    path = resolve(value)
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        log.warning(
            "Compilation cache off: cannot write %s (%s). Set --compilation_cache=DIR (or $%s) "
            "to a writable directory, or =off to silence this.",
            path,
            e.strerror or e,
            ENV,
        )
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
