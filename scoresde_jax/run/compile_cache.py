"""JAX's persistent compilation cache, on by default for the command line (a training step takes
20-70 s to compile on a CPU): ``--compilation_cache=DIR``, else ``$SCORESDE_COMPILATION_CACHE``,
else ``$XDG_CACHE_HOME/scoresde_jax/jax``; ``off`` (or an unwritable directory) turns it off."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "SCORESDE_COMPILATION_CACHE"
OFF_VALUES = ("off", "none", "no", "false", "0", "disabled")


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scoresde_jax" / "jax"


def resolve(value: str | None = None) -> Path | None:
    """The cache directory for a flag ``value`` (``None``: not given), or ``None`` when off."""
    value = os.environ.get(ENV) if value is None else value
    if not (value or "").strip():
        return default_dir()
    if value.strip().lower() in OFF_VALUES:
        return None
    return Path(value).expanduser()


def enable(value: str | None = None, *, min_compile_time_s: float = 1.0) -> Path | None:
    """Points JAX's cache at :func:`resolve` (``value``) and returns it (``None``: off or not
    writable); computations compiled faster than ``min_compile_time_s`` are not stored."""
    import jax

    path = resolve(value)
    try:
        if path is not None:
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
        path = None
    jax.config.update("jax_enable_compilation_cache", path is not None)
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
