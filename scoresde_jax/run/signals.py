"""SIGTERM and SIGINT as a request to stop at the next step boundary, after saving; signals
arriving during that save are logged and ignored, so it is never cut short."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


class StopSignal:
    """Records the first SIGTERM/SIGINT while active (a context manager; main thread only)."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

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
