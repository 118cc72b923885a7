"""Orbax checkpoints of the training state in ``<workdir>/checkpoints``."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpointer"]


class Checkpointer:
    """Saves and restores ``TrainState`` pytrees, keeping the ``max_to_keep`` most recent steps."""

    def __init__(self, workdir: str, *, max_to_keep: int | None = 3, read_only: bool = False):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        if read_only and not os.path.isdir(self.directory):
            raise FileNotFoundError(
                f"No checkpoint directory {self.directory}. Train first with --mode train and the "
                "same --workdir, or point --workdir at a directory that holds checkpoints/."
            )
        # Readers open the manager without creating anything; Orbax's own read_only mode only
        # adds log noise.
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, state, *, force: bool = False) -> None:
        step = int(jax.device_get(state.step))
        self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(self, abstract_state, step: int | None = None):
        """Restores ``step`` (default: latest) into the shapes/shardings of ``abstract_state``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"No checkpoint in {self.directory}. Train first with --mode train and the same "
                "--workdir, or point --workdir at a directory that holds checkpoints/."
            )
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
