"""The training loop: exact resume, NaN guard that keeps the last good checkpoint, sharded steps."""

import jax
import numpy as np
import pytest
from train_utils import leaves, override

from configs.toy.gmm import get_config
from scoresde_jax.run import trainer as train_lib
from scoresde_jax.run.checkpoint import Checkpointer
from scoresde_jax.run.experiment import build_experiment


def small_config(**overrides):
    config = get_config()
    config.model.hidden = (32, 32)
    config.model.embed_dim = 16
    config.training.batch_size = 64
    config.training.n_iters = 200
    config.training.n_jitted_steps = 50
    config.training.log_freq = 50
    config.training.snapshot_freq = 100
    config.training.snapshot_sampling = False
    config.training.progress_bar = False
    config.data.n_train = 2_000
    return override(config, overrides)


def test_resume_is_exact(tmp_path):
    straight = train_lib.train(small_config(), str(tmp_path / "straight"))
    # Stop after 100 steps, then resume to 200 in a fresh call from the checkpoint.
    train_lib.train(small_config(**{"training.n_iters": 100}), str(tmp_path / "resumed"))
    assert Checkpointer(str(tmp_path / "resumed")).latest_step() == 100
    resumed = train_lib.train(small_config(), str(tmp_path / "resumed"))
    assert int(resumed.step) == int(straight.step) == 200
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nan_loss_right_after_resume_names_that_checkpoint(tmp_path, monkeypatch):
    workdir = str(tmp_path / "w")
    train_lib.train(small_config(**{"training.n_iters": 100}), workdir)

    real = train_lib.make_toy_dataset

    def poisoned(*args, **kwargs):
        x = real(*args, **kwargs)
        x[:] = np.nan
        return x

    monkeypatch.setattr(train_lib, "make_toy_dataset", poisoned)
    with pytest.raises(train_lib.NonFiniteLossError) as err:
        train_lib.train(small_config(), workdir)
    message = str(err.value)
    # The checkpoint it resumed from is named, and not called good: it produced the NaN at once.
    assert "resumed from checkpoint step 100" in message
    assert "checkpoints/100" in message and "digests verified" in message
    assert "good" not in message
    ckpt = Checkpointer(workdir)
    assert ckpt.all_steps() == [100]
    exp = build_experiment(small_config())
    state = ckpt.restore(exp.abstract_target())
    assert all(np.isfinite(x).all() for x in leaves(state.params))


def test_nan_loss_later_keeps_the_checkpoint_this_run_saved(tmp_path, monkeypatch):
    workdir = str(tmp_path / "w")
    real = train_lib._toy_batches

    def poisoned(train_data, batch_size, n_steps, seed, step):
        x = real(train_data, batch_size, n_steps, seed, step)
        return np.full_like(x, np.nan) if step >= 100 else x

    monkeypatch.setattr(train_lib, "_toy_batches", poisoned)
    with pytest.raises(train_lib.NonFiniteLossError, match="last good checkpoint \\(step 100\\)"):
        train_lib.train(small_config(), workdir)
    assert Checkpointer(workdir).all_steps() == [100]


def test_sharded_step_matches_single_device(tmp_path):
    assert jax.device_count() == 8, "conftest.py asks for 8 fake CPU devices"
    one = train_lib.train(small_config(**{"num_devices": 1}), str(tmp_path / "one"))
    eight = train_lib.train(small_config(**{"num_devices": 8}), str(tmp_path / "eight"))
    for leaf in jax.tree.leaves(eight.params):
        assert leaf.sharding.is_fully_replicated
        assert len(leaf.sharding.device_set) == 8
    # Same data, same keys: only the reduction order of the batch mean differs.
    for a, b in zip(leaves(one.params), leaves(eight.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_sharded_step_keeps_shardings_and_compiles_once():
    config = small_config(**{"training.n_jitted_steps": 2})
    exp = build_experiment(config)
    assert exp.mesh.shape["data"] == 8
    step = train_lib.jitted_train_step(exp)
    state = exp.init_state()
    in_shardings = jax.tree.map(lambda x: x.sharding, state)
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = rng.standard_normal((2, 64, 2)).astype(np.float32)
        batch = jax.device_put(batch, exp.batch_sharding(1))
        assert batch.sharding.shard_shape(batch.shape) == (2, 8, 2)
        state, metrics = step(state, batch)
        assert np.isfinite(float(metrics["loss"]))
    assert int(state.step) == 6
    # Same shardings in and out, so the donated state feeds the next call without a retrace.
    assert jax.tree.map(lambda x: x.sharding, state) == in_shardings
    assert step._cache_size() == 1
