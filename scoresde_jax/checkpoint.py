"""Orbax checkpoints of the training state in ``<workdir>/checkpoints``.

Two kinds of checkpoints share one directory, told apart by their step:

* *snapshots*, every ``snapshot_freq`` steps, are kept (all of them, or the newest
  ``max_snapshots``): evaluation reads them;
* *preemption checkpoints*, every ``snapshot_freq_for_preemption`` steps (and whenever the job
  is told to stop), only the ``keep_recent`` newest are kept: they bound the work lost when a job
  is killed.

Saves are asynchronous (the state is copied to host memory before :meth:`Checkpointer.save`
returns, so training continues with donated buffers while files are written). A step directory
only becomes visible once complete, so a job killed mid-save leaves the previous checkpoint as the
latest. A checkpoint that is visible but unreadable (disk full, truncated copy) is skipped with a
warning and the previous one is restored instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

__all__ = ["Checkpointer", "CheckpointRestoreError"]

log = logging.getLogger(__name__)

_NO_CHECKPOINT = (
    "Train first with --mode train and the same --workdir, or point --workdir at a directory that "
    "holds checkpoints/ (e.g. one written by `python -m scoresde_jax.convert`)."
)


class CheckpointRestoreError(RuntimeError):
    """No checkpoint in the directory could be restored."""


class Checkpointer:
    """Saves and restores ``TrainState`` pytrees.

    Args:
      workdir: the experiment directory; checkpoints live in ``workdir/checkpoints``.
      keep_recent: how many of the newest checkpoints to keep regardless of their step (at least
        2, so an unreadable newest checkpoint still leaves one to fall back to).
      snapshot_freq: steps that are multiples of it are snapshots, kept beyond ``keep_recent``.
      max_snapshots: keep only this many newest snapshots (``None``: all).
      read_only: open an existing directory without creating anything (evaluation).
      async_save: write files in a background thread.
    """

    def __init__(
        self,
        workdir: str,
        *,
        keep_recent: int = 2,
        snapshot_freq: int | None = None,
        max_snapshots: int | None = None,
        read_only: bool = False,
        async_save: bool = True,
    ):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        if read_only and not os.path.isdir(self.directory):
            raise FileNotFoundError(f"No checkpoint directory {self.directory}. {_NO_CHECKPOINT}")
        keep = [policies.LatestN(max(int(keep_recent), 2))]
        if snapshot_freq:
            keep.append(policies.EveryNSteps(int(snapshot_freq), max_to_keep=max_snapshots))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            # Readers open the manager without creating anything; Orbax's own read_only mode
            # only adds log noise.
            create=not read_only,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self.read_only = read_only

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state, *, force: bool = True) -> None:
        """Starts saving ``state`` under its own step (a no-op if that step is already saved)."""
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def reached_preemption(self, step: int) -> bool:
        """True when a multi-host job was told to stop (``jax.distributed`` preemption notice)."""
        return bool(self._manager.reached_preemption(step))

    def restore(self, abstract_state, step: int | None = None):
        """Restores into the shapes/shardings of ``abstract_state``.

        With ``step=None`` the newest readable checkpoint is restored: unreadable ones are skipped
        with a warning (they are left on disk for inspection). An explicit ``step`` must be
        readable.
        """
        self.wait()
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"No checkpoint in {self.directory}. {_NO_CHECKPOINT}")
        if step is not None:
            if step not in steps:
                raise FileNotFoundError(
                    f"No checkpoint for step {step} in {self.directory}; saved steps: {steps}."
                )
            return self._restore(step, abstract_state)
        errors = []
        for s in reversed(steps):
            try:
                state = self._restore(s, abstract_state)
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
                errors.append(f"step {s}: {type(e).__name__}: {e}")
                log.warning(
                    "Checkpoint for step %d in %s is unreadable (%s: %s); trying an older one.",
                    s,
                    self.directory,
                    type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "",
                )
                continue
            if errors:
                log.warning(
                    "Restored step %d after skipping %d unreadable checkpoint(s).", s, len(errors)
                )
                if not self.read_only:
                    self._quarantine([t for t in steps if t > s])
            return state
        raise CheckpointRestoreError(
            f"None of the checkpoints in {self.directory} could be restored:\n  "
            + "\n  ".join(errors)
            + "\nIf the network config changed since they were written, use the config they were "
            "trained with; otherwise move the directory away to start afresh."
        )

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unreadable checkpoints out of the way (never deletes them).

        Training that resumes from an older step saves these steps again; the unreadable copies
        go to ``<workdir>/checkpoints_unreadable/`` for inspection.
        """
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
        self._manager.reload()

    def _restore(self, step: int, abstract_state):
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
