"""One writer per work directory: ``<workdir>/<name>.lock`` (JSON: host, pid, heartbeat). A dead
holder's lock is taken over: on its host when its pid is gone or reused, from any host when its
heartbeat (renewed every ``lease / 4``) is older than ``$SCORESDE_LOCK_LEASE_S`` (120 s). It is
created by a hard link from a private file (atomic on NFS too), else with ``O_EXCL``."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
import uuid

from scoresde_jax.errors import WorkdirLockedError

log = logging.getLogger(__name__)

_LEASE_ENV = "SCORESDE_LOCK_LEASE_S"
_DEFAULT_LEASE_S = 120.0

# Locks this process holds, by path: a mode that holds one may call train, which takes it again.
_HELD: dict[str, WorkdirLock | None] = {}
_HELD_GUARD = threading.Lock()


def lease_seconds() -> float:
    """Seconds without a heartbeat after which a holder counts as dead."""
    value = os.environ.get(_LEASE_ENV)
    if not value:
        return _DEFAULT_LEASE_S
    with contextlib.suppress(ValueError):
        if float(value) > 0:
            return float(value)
    raise WorkdirLockedError(f"${_LEASE_ENV}={value!r}: use a positive number of seconds.")


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux; else ``None``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[-1].split()[19]


def _pid_running(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start is not None:
        now = _process_start(pid)
        if now is not None and now != start:
            return False  # the id was reused by a newer process
    return True


def _describe(holder: dict, now: float) -> str:
    text = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    if holder.get("mode"):
        text += f" ({holder['mode']})"
    started, beat = holder.get("started"), holder.get("heartbeat")
    if isinstance(started, int | float):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        text += f", started {when} ({now - started:.0f} s ago)"
    if isinstance(beat, int | float):
        text += f", last heartbeat {now - beat:.0f} s ago"
    return text


class WorkdirLock:
    """The lock ``<directory>/<name>.lock`` of one writer (``"train"``, ``"eval"``)."""

    def __init__(self, directory: str, name: str, *, mode: str | None = None):
        self.path = os.path.join(os.path.abspath(directory), f"{name}.lock")
        self.mode = mode or name
        self.lease = lease_seconds()
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()

    def _record(self) -> dict:
        pid = os.getpid()
        return {
            "host": socket.gethostname(),
            "pid": pid,
            "pid_start": _process_start(pid),
            "mode": self.mode,
            "started": self._started,
            "heartbeat": time.time(),
            "lease_s": self.lease,
            "token": self.token,
        }

    def _read(self) -> dict | None:
        try:
            with open(self.path) as f:
                text = f.read()
            with contextlib.suppress(ValueError):
                holder = json.loads(text)
                if isinstance(holder, dict):
                    return holder
            # Being written by the O_EXCL fallback, or damaged: its age is the file's age.
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        return {"heartbeat": mtime, "lease_s": self.lease, "token": None, "damaged": True}

    def _write_tmp(self, record: dict) -> str:
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def _create(self) -> bool:
        """Creates the lock file atomically; False when it exists."""
        tmp = self._write_tmp(self._record())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            try:  # no hard links on this file system
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                json.dump(self._record(), f)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def stale_reason(self, holder: dict, now: float) -> str | None:
        """Why ``holder`` no longer holds the lock, or ``None`` while it does."""
        beat = holder.get("heartbeat")
        lease = holder.get("lease_s") or self.lease
        if isinstance(beat, int | float) and now - beat > lease:
            ago = f"{now - beat:.0f} s since the last heartbeat"
            return f"its lease expired ({ago}, lease {lease:.0f} s)"
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if not _pid_running(holder["pid"], holder.get("pid_start")):
                return f"process {holder['pid']} on this host is gone"
        return None

    def acquire(self) -> WorkdirLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(20):
            if self._create():
                break
            holder = self._read()
            if holder is None:
                continue  # released in the meantime
            now = time.time()
            reason = self.stale_reason(holder, now)
            if reason is None:
                expires = (holder.get("heartbeat") or now) + (holder.get("lease_s") or self.lease)
                raise WorkdirLockedError(
                    f"{os.path.dirname(self.path)} is in use by another run: "
                    f"{_describe(holder, now)}. Two runs writing one work directory would "
                    "replace each other's results; wait for that run to end, stop it, or use "
                    f"another --workdir. If that process is gone (e.g. it ran on another host), "
                    f"its lock {self.path} expires in {max(expires - now, 0):.0f} s, or delete "
                    "the file."
                )
            if self._take_over(holder):
                log.warning(
                    "Took over the lock %s of %s: %s.", self.path, _describe(holder, now), reason
                )
                break
        else:
            raise WorkdirLockedError(f"Could not take the lock {self.path}; try again.")
        self._thread = threading.Thread(target=self._heartbeat, name="workdir-lock", daemon=True)
        self._thread.start()
        return self

    def _take_over(self, stale: dict) -> bool:
        """Removes the stale lock file, unless another process replaced it meanwhile."""
        aside = f"{self.path}.{self.token}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = None
        with contextlib.suppress(OSError, ValueError):
            with open(aside) as f:
                moved = json.load(f)
        replaced = isinstance(moved, dict) and moved.get("token") != stale.get("token")
        if replaced:  # another process took it over between our read and rename: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        os.remove(aside)
        return not replaced and self._create()

    def _heartbeat(self) -> None:
        interval = max(self.lease / 4, 0.05)
        while not self._stop.wait(interval):
            holder = self._read()
            if holder is None or holder.get("token") != self.token:
                self.lost = True
                log.error(
                    "The lock %s was taken by %s; this run no longer owns its work directory.",
                    self.path,
                    "nobody" if holder is None else _describe(holder, time.time()),
                )
                return
            with contextlib.suppress(OSError):
                os.replace(self._write_tmp(self._record()), self.path)

    def check(self) -> None:
        """Raises when another process has taken the lock over (e.g. after a long pause)."""
        if self.lost:
            raise WorkdirLockedError(
                f"This run lost the lock {self.path} to another process and stops so as not to "
                "write over its results."
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = self._read()
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def hold(directory: str, name: str, *, mode: str | None = None):
    """Holds ``<directory>/<name>.lock`` for the block (re-entrant); in a multi-host job process 0
    takes it (the others get ``None``) and all raise if it failed."""
    import jax

    path = os.path.join(os.path.abspath(directory), f"{name}.lock")
    with _HELD_GUARD:
        reentered = path in _HELD
        held = _HELD.get(path)
    if reentered:
        yield held
        return
    lock = WorkdirLock(directory, name, mode=mode) if jax.process_index() == 0 else None
    error = None
    if lock is not None:
        try:
            lock.acquire()
        except WorkdirLockedError as e:
            error = e
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
        if not int(ok) and error is None:
            error = WorkdirLockedError(
                f"Process 0 could not take the lock {path}: another run uses {directory}."
            )
    if error is not None:
        raise error
    with _HELD_GUARD:
        _HELD[path] = lock
    try:
        yield lock
    finally:
        with _HELD_GUARD:
            _HELD.pop(path, None)
        if lock is not None:
            lock.release()
