"""Checkpoints survive what happens to real jobs: SIGKILL mid-run, SIGTERM, unreadable files."""

import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_train import small_config
from train_utils import leaves

from scoresde_jax import train as train_lib
from scoresde_jax.checkpoint import Checkpointer, CheckpointRestoreError

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The same small toy job as tests/test_train.py, as command-line overrides.
CLI_OVERRIDES = [
    "--config.model.hidden=(32, 32)",
    "--config.model.embed_dim=16",
    "--config.training.batch_size=64",
    "--config.training.n_jitted_steps=50",
    "--config.training.log_freq=50",
    "--config.training.snapshot_freq=100000",
    "--config.training.snapshot_freq_for_preemption=100",
    "--config.training.snapshot_sampling=False",
    "--config.training.progress_bar=False",
    "--config.data.n_train=2000",
]


def _config(n_iters: int):
    return small_config(
        **{
            "training.n_iters": n_iters,
            "training.snapshot_freq": 100_000,
            "training.snapshot_freq_for_preemption": 100,
        }
    )


def _finished_steps(workdir: pathlib.Path) -> list[int]:
    d = workdir / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def _start_training(workdir: pathlib.Path, n_iters: int) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "main.py"), "--config", str(ROOT / "configs/toy/gmm.py")]
    cmd += ["--workdir", str(workdir), "--mode", "train", f"--config.training.n_iters={n_iters}"]
    return subprocess.Popen(
        cmd + CLI_OVERRIDES,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(proc: subprocess.Popen, workdir: pathlib.Path, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _finished_steps(workdir):
            return
        if proc.poll() is not None:
            err = proc.stderr.read()
            raise AssertionError(f"training exited early ({proc.returncode}):\n{err}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow
def test_sigkill_then_resume_is_exact(tmp_path):
    total = 1_000
    straight = train_lib.train(_config(total), str(tmp_path / "straight"))

    workdir = tmp_path / "killed"
    # The killed job is told to run far beyond `total`, so it is certainly still running (and
    # possibly in the middle of an asynchronous save) when it is killed.
    proc = _start_training(workdir, 1_000_000)
    _wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _finished_steps(workdir)
    assert killed_at and killed_at[-1] < total, killed_at

    resumed = train_lib.train(_config(total), str(workdir))
    assert int(resumed.step) == int(straight.step) == total
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    workdir = tmp_path / "w"
    proc = _start_training(workdir, 1_000_000)
    _wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "Stopped by SIGTERM" in err
    steps = _finished_steps(workdir)
    # The stop is honoured at the next step boundary, checkpointed whatever the frequency.
    assert steps[-1] % 50 == 0 and steps[-1] < 1_000_000
    exp = train_lib.build_experiment(_config(1_000))
    state = Checkpointer(str(workdir), read_only=True).restore(exp.abstract_target())
    assert int(state.step) == steps[-1]


def _corrupt(step_dir: pathlib.Path) -> None:
    # Overwrite every stored array file (not the metadata) with garbage of the same size.
    files = [p for p in step_dir.rglob("*") if p.is_file() and "metadata" not in p.name]
    assert files
    for p in files:
        size = p.stat().st_size
        p.write_bytes(os.urandom(max(size, 16)))


def test_unreadable_latest_checkpoint_falls_back_and_training_recovers(tmp_path, caplog):
    straight = train_lib.train(_config(200), str(tmp_path / "straight"))
    workdir = tmp_path / "w"
    train_lib.train(_config(200), str(workdir))
    assert _finished_steps(workdir) == [100, 200]
    _corrupt(workdir / "checkpoints" / "200")

    exp = train_lib.build_experiment(_config(200))
    with caplog.at_level(logging.WARNING, logger="scoresde_jax.checkpoint"):
        state = Checkpointer(str(workdir), read_only=True).restore(exp.abstract_target())
    assert int(state.step) == 100
    assert "step 200" in caplog.text and "unreadable" in caplog.text
    # Read-only readers leave the files alone.
    assert _finished_steps(workdir) == [100, 200]

    # Training resumes from 100, moves the bad copy aside (kept for inspection), and redoes
    # steps 100-200 exactly.
    resumed = train_lib.train(_config(200), str(workdir))
    assert _finished_steps(workdir) == [100, 200]
    assert len(list((workdir / "checkpoints_unreadable").iterdir())) == 1
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    workdir = tmp_path / "w"
    train_lib.train(_config(100), str(workdir))
    _corrupt(workdir / "checkpoints" / "100")
    exp = train_lib.build_experiment(_config(100))
    with pytest.raises(CheckpointRestoreError, match="None of the checkpoints"):
        Checkpointer(str(workdir), read_only=True).restore(exp.abstract_target())
    assert jax.device_count() == 8
