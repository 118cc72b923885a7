"""Checkpoints are verified on restore: digests written with the arrays, finite values, each
step read by a fresh reader; checkpoints of earlier versions still load."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from scoresde_jax.errors import MissingCheckpointError
from scoresde_jax.run.checkpoint import (
    Checkpointer,
    CheckpointRestoreError,
    combined_digest,
    state_digests,
)
from scoresde_jax.run.state import TrainState


def _state(step: int, scale: float = 1.0) -> TrainState:
    params = {"w": scale * jnp.arange(600.0).reshape(20, 30), "b": jnp.ones((30,), jnp.float32)}
    opt = optax.adam(1e-3)
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        ema_params=jax.tree.map(lambda x: 0.5 * x, params),
        opt_state=opt.init(params),
    )


def _abstract():
    return jax.eval_shape(lambda: _state(0))


def test_digest_changes_with_any_single_word_and_not_with_sharding():
    x = jnp.arange(4096.0, dtype=jnp.float32).reshape(64, 64)
    base, finite = state_digests({"x": x})
    assert finite == []
    for index in (0, 1, 2047, 4095):
        flat = np.asarray(x).ravel().copy()
        flat[index] = np.nextafter(flat[index], np.float32(1e9))  # one bit of one value
        changed, _ = state_digests({"x": jnp.asarray(flat.reshape(64, 64))})
        assert changed["['x']"] != base["['x']"]
    # Swapping two values changes it too (the sums are position-weighted).
    flat = np.asarray(x).ravel().copy()
    flat[[3, 7]] = flat[[7, 3]]
    assert state_digests({"x": jnp.asarray(flat.reshape(64, 64))})[0] != base
    # The same values on 8 devices, sharded along rows: the same digest.
    mesh = jax.make_mesh((8,), ("data",))
    sharded = jax.device_put(
        x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    )
    assert state_digests({"x": sharded})[0] == base
    assert state_digests({"x": x.at[5, 5].set(jnp.nan)})[1] == ["['x']"]
    assert combined_digest(base) == combined_digest(dict(base))


def test_silently_changed_arrays_fall_back_to_the_previous_checkpoint(tmp_path, caplog):
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(_state(100))
    ckpt.save(_state(200))
    ckpt.wait()
    # Rewrite step 200's arrays with other values of the same shapes behind the digests' back:
    # what bit flips inside stored data amount to. Orbax reads such files without complaint.
    path = os.path.join(tmp_path, "checkpoints", "200", "state")
    writer = ocp.StandardCheckpointer()
    writer.save(path, _state(200, scale=1.0001), force=True)
    writer.wait_until_finished()
    with caplog.at_level(logging.WARNING, logger="scoresde_jax.run.checkpoint"):
        restored = Checkpointer(str(tmp_path), read_only=True).restore_verified(_abstract())
    assert restored.step == 100 and restored.verified
    assert "differ from the digests written with them" in caplog.text
    assert "params['w']" in restored.skipped[0]
    with pytest.raises(CheckpointRestoreError, match="step 200 .* unreadable: 2 array"):
        Checkpointer(str(tmp_path), read_only=True).restore_verified(_abstract(), 200)


def test_non_finite_values_are_unreadable_and_never_saved(tmp_path):
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(_state(100))
    bad = _state(200)
    bad = bad.replace(params={**bad.params, "b": bad.params["b"].at[3].set(jnp.inf)})
    with pytest.raises(FloatingPointError, match="non-finite"):
        ckpt.save(bad)
    ckpt.close()
    # A checkpoint that holds NaN anyway (one of an earlier version, without digests) is
    # unreadable: training must not continue from it.
    manager = ocp.CheckpointManager(os.path.join(tmp_path, "checkpoints"))
    manager.save(300, args=ocp.args.StandardSave(_state(300, scale=float("nan"))))
    manager.wait_until_finished()
    manager.close()
    with pytest.raises(CheckpointRestoreError, match="step 300 .* non-finite values in .*w"):
        Checkpointer(str(tmp_path), read_only=True).restore_verified(_abstract(), 300)
    assert Checkpointer(str(tmp_path), read_only=True).restore_verified(_abstract()).step == 100


def test_checkpoint_of_an_earlier_version_restores_with_a_warning(tmp_path, caplog):
    # The layout before digests: one "default" item written by a CheckpointManager.
    manager = ocp.CheckpointManager(os.path.join(tmp_path, "checkpoints"))
    manager.save(300, args=ocp.args.StandardSave(_state(300)))
    manager.wait_until_finished()
    manager.close()
    with caplog.at_level(logging.WARNING, logger="scoresde_jax.run.checkpoint"):
        restored = Checkpointer(str(tmp_path), read_only=True).restore_verified(_abstract())
    assert restored.step == 300 and not restored.verified
    assert "written without digests" in caplog.text
    np.testing.assert_array_equal(restored.state.params["w"], _state(300).params["w"])
    # Training on saves the new layout beside it.
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(_state(400))
    ckpt.close()
    assert Checkpointer(str(tmp_path), read_only=True).restore_verified(_abstract()).verified


def test_junk_step_directories_are_skipped_and_moved_aside_by_writers(tmp_path):
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(_state(100))
    ckpt.close()
    root = tmp_path / "checkpoints"
    (root / "200").mkdir()
    (root / "300").mkdir()
    (root / "300" / "state").mkdir()  # an interrupted copy: the item without its files
    restored = Checkpointer(str(tmp_path), read_only=True).restore_verified(_abstract())
    assert restored.step == 100 and len(restored.skipped) == 2
    assert sorted(p.name for p in root.iterdir()) == ["100", "200", "300"]  # readers touch nothing
    writer = Checkpointer(str(tmp_path))
    assert writer.restore_verified(_abstract()).step == 100
    writer.close()
    assert sorted(p.name for p in root.iterdir()) == ["100"]
    moved = sorted(p.name.split("-")[0] for p in (tmp_path / "checkpoints_unreadable").iterdir())
    assert moved == ["200", "300"]


def test_missing_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(MissingCheckpointError, match="No checkpoint directory"):
        Checkpointer(str(tmp_path), read_only=True)
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    with pytest.raises(MissingCheckpointError, match="No checkpoint in"):
        ckpt.restore(_abstract())
    ckpt.save(_state(100))
    with pytest.raises(MissingCheckpointError, match="saved steps: \\[100\\]"):
        ckpt.restore(_abstract(), 200)
    ckpt.close()
