"""Orbax checkpoints in ``<workdir>/checkpoints``: each step holds ``state`` and ``integrity`` (a
JSON digest of every array). Restoring verifies digests and finiteness and falls back to older
steps; writers move failed ones to ``checkpoints_unreadable/``. Checkpoints of earlier versions
(a ``default`` item, no digests) are checked for finiteness only."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from scoresde_jax.errors import MissingCheckpointError, UserError, WorkdirError

log = logging.getLogger(__name__)

_NO_CHECKPOINT = (
    "Train first with --mode train and the same --workdir, or point --workdir at a directory that "
    "holds checkpoints/ (e.g. one written by `python -m scoresde_jax.convert`)."
)

_STATE, _INTEGRITY, _LEGACY = "state", "integrity", "default"
_INTEGRITY_FORMAT = 1


def _drop_callbacks_of_closed_loops() -> None:
    """Makes ``call_soon_threadsafe`` on a closed asyncio loop a no-op: when one array of a
    damaged checkpoint fails, Orbax closes the loop while tensorstore completes the others, each
    callback printing an "Event loop is closed" traceback (hundreds per checkpoint)."""
    import asyncio

    loop_class = asyncio.BaseEventLoop
    if getattr(loop_class.call_soon_threadsafe, "_scoresde_quiet", False):
        return
    original = loop_class.call_soon_threadsafe

    def call_soon_threadsafe(self, callback, *args, context=None):
        if self.is_closed():
            return None
        return original(self, callback, *args, context=context)

    call_soon_threadsafe._scoresde_quiet = True
    loop_class.call_soon_threadsafe = call_soon_threadsafe


class _OrbaxSaveErrors(logging.Filter):
    """Drops Orbax's error records of a failed save (``Checkpointer`` raises it once)."""

    _ORBAX = f"{os.sep}orbax{os.sep}checkpoint{os.sep}"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        if self._ORBAX in (record.pathname or ""):
            return False
        # asyncio repeats it as "Task exception was never retrieved".
        tb = record.exc_info[2] if record.exc_info else None
        while tb is not None:
            if self._ORBAX in tb.tb_frame.f_code.co_filename:
                return False
            tb = tb.tb_next
        return True


class CheckpointRestoreError(UserError, RuntimeError):
    """No checkpoint in the directory could be restored."""


class _Unreadable(Exception):
    """One step directory failed to restore or to verify."""


_CHUNK = 1 << 22  # words per pass: bounds the temporary memory of a digest


def _host(x) -> np.ndarray:
    """The whole of a replicated (possibly multi-host) array on this host."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))


def _words(a: np.ndarray) -> np.ndarray:
    """The bits of ``a`` as a flat uint32 array."""
    a = np.ascontiguousarray(a).reshape(-1)
    size = a.dtype.itemsize
    if size in (4, 8):
        return a.view(np.uint32)
    if size in (1, 2):  # bool included: its bytes are 0 or 1
        return a.view(f"uint{8 * size}").astype(np.uint32)
    raise TypeError(f"no digest for dtype {a.dtype}")


def _leaf_digest(x) -> tuple[str, bool]:
    """Two position-weighted sums of the 32-bit words of ``x`` (mod 2^32) as 16 hex digits, and
    whether ``x`` is finite. Odd weights make any one changed word change the first sum; the
    second mixes words nonlinearly so several changes are unlikely to cancel in both. Integer sums
    are order-free, so the digest is exact whatever the devices or sharding."""
    a = _host(x)
    w = _words(a)
    h1 = h2 = 0
    with np.errstate(over="ignore"):
        for start in range(0, len(w), _CHUNK):
            c = w[start : start + _CHUNK]
            i = np.arange(start, start + len(c), dtype=np.uint64).astype(np.uint32)
            wa = (i * np.uint32(0x9E3779B1) + np.uint32(0x7F4A7C15)) | np.uint32(1)
            wb = (i * np.uint32(0xC2B2AE3D) + np.uint32(0x27D4EB2F)) | np.uint32(1)
            mixed = (c ^ (c >> np.uint32(15))) * np.uint32(0x85EBCA6B)
            mixed ^= mixed >> np.uint32(13)
            h1 = (h1 + int(np.sum(c * wa, dtype=np.uint32))) & 0xFFFFFFFF
            h2 = (h2 + int(np.sum(mixed * wb, dtype=np.uint32))) & 0xFFFFFFFF
    finite = bool(np.isfinite(a).all()) if jnp.issubdtype(a.dtype, jnp.inexact) else True
    return f"{h1:08x}{h2:08x}", finite


def state_digests(tree) -> tuple[dict[str, str], list[str]]:
    """``({leaf path: 16-hex digest}, [paths of leaves with non-finite values])`` of a pytree."""
    digests, non_finite = {}, []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = jax.tree_util.keystr(path)
        digests[name], finite = _leaf_digest(leaf)
        if not finite:
            non_finite.append(name)
    return digests, non_finite


def combined_digest(digests: dict[str, str]) -> str:
    """One hex digest of a ``{path: digest}`` mapping (e.g. all EMA parameters)."""
    text = json.dumps(sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class RestoredCheckpoint:
    """A verified checkpoint: the state and what is known about it."""

    state: Any
    step: int
    path: str
    digests: dict[str, str]
    verified: bool  # False for a checkpoint written without digests
    meta: dict
    skipped: tuple[str, ...] = ()  # "step N: cause" of each newer checkpoint that failed

    def weights_digest(self, which: str = "ema_params") -> str:
        """Digest of one part of the state (``"ema_params"``, ``"params"``, ...)."""
        if not self.digests:
            return ""
        return combined_digest({k: v for k, v in self.digests.items() if k.startswith(f".{which}")})


def _readable_cause(e: Exception) -> str:
    """What a failed Orbax read means, then the error itself (shortened)."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(e, UnicodeDecodeError | json.JSONDecodeError):
        meaning = "its metadata files are damaged"
    elif "DATA_LOSS" in text or "Error reading" in text or "Error opening" in text:
        meaning = "its array files are damaged or truncated"
    elif isinstance(e, FileNotFoundError) or "NOT_FOUND" in text:
        meaning = "files of it are missing"
    elif "shape" in text.lower() or "structure" in text.lower():
        meaning = "its arrays do not fit this config's network (another config wrote it?)"
    else:
        meaning = "it cannot be read"
    return f"{meaning} ({type(e).__name__}: {first[:200]})"


def _is_disk_full(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left" in text or "RESOURCE_EXHAUSTED" in text or "Disk quota" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _disk_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def _size_text(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _tree_nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


class Checkpointer:
    """Saves and restores pytrees with digests in ``workdir/checkpoints``; multiples of
    ``snapshot_freq`` are kept beyond the two newest (the newest ``max_snapshots``; ``None``: all).
    ``read_only`` creates and moves nothing."""

    def __init__(
        self,
        workdir: str,
        *,
        snapshot_freq: int | None = None,
        max_snapshots: int | None = None,
        read_only: bool = False,
        async_save: bool = True,
    ):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        if read_only and not os.path.isdir(self.directory):
            raise MissingCheckpointError(
                f"No checkpoint directory {self.directory}. {_NO_CHECKPOINT}"
            )
        self.read_only, self._manager = read_only, None
        if not read_only:
            keep = [policies.LatestN(2)]  # an unreadable newest one leaves one to fall back to
            if snapshot_freq:
                keep.append(policies.EveryNSteps(int(snapshot_freq), max_to_keep=max_snapshots))
            options = ocp.CheckpointManagerOptions(
                preservation_policy=policies.AnyPreservationPolicy(keep),
                enable_async_checkpointing=async_save,
            )
            for name in ("absl", "asyncio"):
                logger = logging.getLogger(name)
                if not any(isinstance(f, _OrbaxSaveErrors) for f in logger.filters):
                    logger.addFilter(_OrbaxSaveErrors())
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._pending: tuple[int, int] | None = None  # (step, bytes) of an unfinished save

    def all_steps(self) -> list[int]:
        """Steps of the directories in ``checkpoints/`` (complete or not)."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(
            int(name)
            for name in os.listdir(self.directory)
            if name.isdigit() and os.path.isdir(os.path.join(self.directory, name))
        )

    def latest_step(self) -> int | None:
        return (self.all_steps() or [None])[-1]

    def save(self, state, *, force: bool = True, meta: dict | None = None) -> None:
        """Starts saving ``state`` under its step (unless saved) with ``meta`` (JSON); raises
        WorkdirError when this or the previous save failed (disk full, permissions)."""
        if self._manager is None:
            raise RuntimeError("a read-only Checkpointer cannot save")
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return
        digests, non_finite = state_digests(state)
        if non_finite:
            raise FloatingPointError(
                f"Refusing to checkpoint step {step}: non-finite values in {non_finite[:5]}."
            )
        record = {
            "format": _INTEGRITY_FORMAT,
            "step": step,
            "digests": digests,
            "written_at": time.time(),
            "meta": meta or {},
        }
        args = ocp.args.Composite(
            **{_STATE: ocp.args.StandardSave(state), _INTEGRITY: ocp.args.JsonSave(record)}
        )
        self._guard_write(lambda: self._manager.save(step, args=args, force=force))
        self._pending = (step, _tree_nbytes(state))

    def _guard_write(self, fn):
        try:
            return fn()
        except Exception as e:
            if not _is_disk_full(e) and not isinstance(e, PermissionError):
                raise
            pending, self._pending = self._pending, None
            self._remove_temporaries()
            intact = [s for s in self.all_steps() if pending is None or s != pending[0]]
            if intact:
                size = _disk_bytes(os.path.join(self.directory, str(intact[-1])))
                need = f"a checkpoint takes {_size_text(size)}, as step {intact[-1]} does"
            else:
                need = f"the state alone takes {_size_text(pending[1] if pending else 0)}"
            free = _size_text(shutil.disk_usage(self.directory).free)
            last = f"step {intact[-1]}" if intact else "none"
            cause = "the disk is full" if _is_disk_full(e) else f"permission denied ({e})"
            what = f"checkpoint step {pending[0]}" if pending else "a checkpoint"
            raise WorkdirError(
                f"Could not write {what} to {self.directory}: {cause} ({need}; {free} are free). "
                f"The last complete checkpoint ({last}) is intact. Free space (or fix "
                "permissions) and run the same command again to resume from it."
            ) from None

    def _remove_temporaries(self) -> None:
        """Removes the partial directories a failed save leaves behind."""
        if jax.process_index() == 0:
            for tmp in glob.glob(os.path.join(self.directory, "*.orbax-checkpoint-tmp*")):
                shutil.rmtree(tmp, ignore_errors=True)

    def reached_preemption(self, step: int) -> bool:
        """True when a multi-host job was told to stop (``jax.distributed`` preemption notice)."""
        return self._manager is not None and bool(self._manager.reached_preemption(step))

    def wait(self) -> None:
        """Blocks until pending saves are on disk (raises :class:`WorkdirError` if they fail)."""
        if self._manager is not None:
            self._guard_write(self._manager.wait_until_finished)
        self._pending = None

    def close(self) -> None:
        if self._manager is not None:
            try:
                self.wait()
            finally:
                self._manager.close()

    def restore(self, abstract_state, step: int | None = None):
        """The state of :meth:`restore_verified` (see there)."""
        return self.restore_verified(abstract_state, step).state

    def restore_verified(self, abstract_state, step: int | None = None) -> RestoredCheckpoint:
        """Restores into ``abstract_state`` and verifies: ``step=None`` takes the newest that
        verifies, skipping (and, unless read-only, moving aside) failed newer ones."""
        self.wait()
        steps = self.all_steps()
        if not steps:
            raise MissingCheckpointError(f"No checkpoint in {self.directory}. {_NO_CHECKPOINT}")
        if step is not None and step not in steps:
            raise MissingCheckpointError(
                f"No checkpoint for step {step} in {self.directory}; saved steps: {steps}."
            )
        errors = []
        for s in reversed(steps) if step is None else [step]:
            try:
                restored = self._restore_step(s, abstract_state)
            except _Unreadable as e:
                if step is not None:
                    raise CheckpointRestoreError(
                        f"The checkpoint for step {step} in {self.directory} is unreadable: {e}"
                    ) from None
                errors.append(f"step {s}: {e}")
                where = os.path.join(self.directory, str(s))
                log.warning("Checkpoint %s is unreadable (%s); trying an older one.", where, e)
                continue
            if errors:
                log.warning(
                    "Restored step %d after skipping %d unreadable checkpoint(s).", s, len(errors)
                )
                if not self.read_only:
                    self._quarantine([t for t in steps if t > s])
            return dataclasses.replace(restored, skipped=tuple(errors))
        raise CheckpointRestoreError(
            f"None of the checkpoints in {self.directory} could be restored:\n  "
            + "\n  ".join(errors)
            + "\nIf the network config changed since they were written, use the config they were "
            "trained with; otherwise move the directory away to start afresh."
        )

    def _restore_step(self, step: int, abstract_state) -> RestoredCheckpoint:
        path = os.path.join(self.directory, str(step))
        items = set(os.listdir(path)) if os.path.isdir(path) else set()
        key = _STATE if _STATE in items or _LEGACY not in items else _LEGACY
        if key not in items:
            what = "empty" if not items else f"partial (holds only {sorted(items)})"
            raise _Unreadable(f"the step directory is {what}: no '{_STATE}' item")
        layout = {key: ocp.args.StandardRestore(abstract_state)}
        if key == _STATE and _INTEGRITY in items:
            layout[_INTEGRITY] = ocp.args.JsonRestore()
        # A fresh reader per attempt: a failed restore must not affect the next one.
        _drop_callbacks_of_closed_loops()
        reader = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
        try:
            restored = reader.restore(path, args=ocp.args.Composite(**layout))
        except Exception as e:  # noqa: BLE001 - any failure to read makes the step unreadable
            raise _Unreadable(_readable_cause(e)) from None
        finally:
            reader.close()
        state = restored[key]
        digests, non_finite = state_digests(state)
        record = restored.get(_INTEGRITY) if _INTEGRITY in layout else None
        if key == _STATE and record is None:
            raise _Unreadable(f"the '{_INTEGRITY}' record of its digests is missing")
        expected = record.get("digests", {}) if record is not None else digests
        bad = sorted(k for k in set(expected) | set(digests) if expected.get(k) != digests.get(k))
        if bad:
            raise _Unreadable(
                f"{len(bad)} array(s) differ from the digests written with them (damaged "
                f"files), e.g. {', '.join(bad[:3])}"
            )
        if non_finite:
            raise _Unreadable(f"non-finite values in {', '.join(non_finite[:3])}")
        if key == _LEGACY:
            log.warning(
                "Checkpoint %s was written without digests (by an earlier version or by the "
                "converter of one); its values are finite but cannot be verified.",
                path,
            )
        meta = (record or {}).get("meta", {})
        return RestoredCheckpoint(state, step, path, digests, record is not None, meta)

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unreadable checkpoints to ``checkpoints_unreadable/`` (never deletes them)."""
        if jax.process_index() == 0:
            dest_root = self.directory + "_unreadable"
            os.makedirs(dest_root, exist_ok=True)
            for step in steps:
                src = os.path.join(self.directory, str(step))
                if os.path.isdir(src):
                    dest = os.path.join(dest_root, f"{step}-{int(time.time())}")
                    shutil.move(src, dest)
                    log.warning("Moved unreadable checkpoint %s to %s", src, dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("scoresde_jax checkpoint quarantine")
        if self._manager is not None:
            self._manager.reload()
