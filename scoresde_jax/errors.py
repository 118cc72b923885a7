"""Errors whose message alone ``main.py`` prints (``--traceback``: with the traceback) before
exiting with their ``exit_code``; each also derives from the built-in exception a caller expects.
"""

from __future__ import annotations

import signal

EXIT_USER_ERROR = 2
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: the shell's status of a process ended by SIGTERM
EXIT_SIGINT = 128 + signal.SIGINT  # 130


class UserError(Exception):
    """A problem with the input (config, data, checkpoint, work directory), not a bug."""

    exit_code = EXIT_USER_ERROR


class ConfigError(UserError, ValueError):
    """A config field has an unknown name or an invalid value."""


class DataError(UserError, ValueError):
    """Data files exist but cannot be used: corrupt, truncated, or of the wrong kind."""


class MissingDataError(UserError, FileNotFoundError):
    """The data are not where the config says."""


class MissingCheckpointError(UserError, FileNotFoundError):
    """No checkpoint (or not the requested one) in the work directory."""


class WorkdirError(UserError, OSError):
    """The work directory cannot be written: permissions, or the disk is full."""


class WorkdirLockedError(UserError, RuntimeError):
    """Another process holds the lock of the work directory."""


def signal_exit_status(signal_name: str) -> int:
    """The shell's exit status of a process stopped by ``signal_name`` ("SIGTERM" -> 143)."""
    return 128 + int(signal.Signals[signal_name])


class StoppedBySignal(Exception):
    """A run stopped on SIGTERM/SIGINT (or a preemption notice) after saving its work; the same
    command resumes it. Its exit status (143 / 130) tells a requeueing scheduler it did not finish.
    """

    def __init__(self, message: str, *, signal_name: str = "SIGTERM", step: int | None = None):
        super().__init__(message)
        self.signal_name = signal_name
        self.step = step

    @property
    def exit_code(self) -> int:
        if self.signal_name in ("SIGTERM", "SIGINT"):
            return signal_exit_status(self.signal_name)
        return EXIT_SIGTERM  # a preemption notice: the job was told to stop
