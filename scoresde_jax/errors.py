"""Errors that a message can explain to the user, and the exit statuses of the command line.

``main.py`` prints a :class:`UserError`'s message alone (``--traceback`` or
``SCORESDE_TRACEBACK=1``: the traceback) and exits with its ``exit_code``. Each class also
derives from the built-in exception a caller would expect (``ValueError``, ``FileNotFoundError``).
"""

from __future__ import annotations

import signal

__all__ = [
    "EXIT_USER_ERROR",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "UserError",
    "ConfigError",
    "DataError",
    "MissingDataError",
    "MissingCheckpointError",
    "WorkdirError",
    "WorkdirLockedError",
    "StoppedBySignal",
    "signal_exit_status",
]

# Exit statuses of ``main.py`` (documented in the README).
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
    """A run stopped early on SIGTERM/SIGINT (or a preemption notice) after saving its work.

    Not an error: the same command resumes it. The exit status (143 for SIGTERM, 130 for SIGINT)
    tells a scheduler that requeues interrupted jobs that this one did not finish.
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
