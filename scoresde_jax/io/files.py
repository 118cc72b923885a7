"""Files written so that an interrupted job never leaves a truncated one behind."""

from __future__ import annotations

import os
import tempfile

import numpy as np


def atomic_savez(path: str | os.PathLike, **arrays) -> None:
    """``np.savez`` to exactly ``path`` (no ``.npz`` added) through a temporary file and a rename,
    so a reader sees the old file or the whole new one; creates the directory if needed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        # mkstemp creates the file readable by its owner only.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
