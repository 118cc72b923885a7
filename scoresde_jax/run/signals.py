"""SIGTERM and SIGINT as a request to stop at the next step boundary, after saving.

A preemptible job gets SIGTERM shortly before it is killed; Ctrl-C sends SIGINT. The training
loops check :attr:`StopSignal.received` between steps, save a checkpoint, wait for it to be on
disk and raise :class:`~scoresde_jax.errors.StoppedBySignal`. Signals that arrive while that save
is in progress are logged and ignored, so the save is never cut short (SIGKILL still ends the
process at once, and the previous checkpoint then remains the newest complete one).
"""

from __future__ import annotations

import logging
import signal
import threading

__all__ = ["StopSignal"]

log = logging.getLogger(__name__)


class StopSignal:
    """Records the first SIGTERM/SIGINT while active (a context manager; main thread only)."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def install(self) -> StopSignal:
        """Starts recording signals (a no-op outside the main thread); returns ``self``."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __enter__(self) -> StopSignal:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            log.warning(
                "%s received while stopping after %s: the checkpoint is being saved and the run "
                "will stop as soon as it is on disk (SIGKILL stops at once, losing the steps "
                "since the previous checkpoint).",
                name,
                self.received,
            )
            return
        self.received = name
        log.warning("%s received: saving a checkpoint at the next step, then stopping.", name)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
