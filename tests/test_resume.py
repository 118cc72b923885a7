"""Checkpoints survive what happens to real jobs: SIGKILL mid-run, SIGTERM, unreadable files."""

import logging
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_train import small_config
from train_utils import leaves

from scoresde_jax.run import trainer as train_lib
from scoresde_jax.run.checkpoint import Checkpointer, CheckpointRestoreError
from scoresde_jax.run.experiment import build_experiment

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


def _cli_train(workdir: pathlib.Path, n_iters: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "main.py"), "--config", str(ROOT / "configs/toy/gmm.py")]
    cmd += ["--workdir", str(workdir), "--mode", "train", f"--config.training.n_iters={n_iters}"]
    return subprocess.run(cmd + CLI_OVERRIDES, cwd=ROOT, capture_output=True, text=True)


def _restored_leaves(workdir: pathlib.Path, n_iters: int):
    exp = build_experiment(_config(n_iters))
    state = Checkpointer(str(workdir), read_only=True).restore(exp.abstract_target())
    return int(state.step), leaves(state)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Uninterrupted runs: ``{n_iters: leaves of the final state}``."""
    root = tmp_path_factory.mktemp("straight")
    return {n: leaves(train_lib.train(_config(n), str(root / str(n)))) for n in (300, 1_000)}


@pytest.mark.slow
def test_sigkill_second_writer_refused_stale_lock_taken_over_resume_exact(tmp_path, straight):
    total = 1_000
    workdir = tmp_path / "killed"
    # The killed job is told to run far beyond `total`, so it is certainly still running (and
    # possibly in the middle of an asynchronous save) when it is killed.
    proc = _start_training(workdir, 1_000_000)
    _wait_for_checkpoint(proc, workdir)
    # Paused (its process alive, its lock held) while a second training of the same directory
    # starts: that one stops at once, naming the first.
    proc.send_signal(signal.SIGSTOP)
    second = _cli_train(workdir, total)
    assert second.returncode == 2, second.stderr[-3000:]
    assert "is in use by another run" in second.stderr
    assert f"process {proc.pid} on host" in second.stderr and "Traceback" not in second.stderr
    assert proc.poll() is None, "the first run must go on"
    assert _finished_steps(workdir)[-1] < total

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _finished_steps(workdir)
    assert killed_at and killed_at[-1] < total, killed_at
    assert (workdir / "train.lock").exists(), "SIGKILL leaves its lock behind"

    resumed = _cli_train(workdir, total)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Took over the lock" in resumed.stderr and "is gone" in resumed.stderr
    assert "Training done: step 1000" in resumed.stdout
    step, final = _restored_leaves(workdir, total)
    assert step == total
    for a, b in zip(straight[total], final, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigterm_twice_saves_exits_143_and_resumes_exactly(tmp_path, straight):
    workdir = tmp_path / "w"
    proc = _start_training(workdir, 1_000_000)
    _wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    if proc.poll() is None:  # a second signal while the checkpoint is being saved
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Stopped by SIGTERM" in err and "Resume with the same command" in err
    assert "Training done" not in out and "Traceback" not in err and "KeyboardInterrupt" not in err
    steps = _finished_steps(workdir)
    # The stop is honoured at the next step boundary, checkpointed whatever the frequency.
    assert steps[-1] % 50 == 0 and steps[-1] < 1_000_000
    assert not (workdir / "train.lock").exists()
    step, _ = _restored_leaves(workdir, 1_000)
    assert step == steps[-1]

    resumed = train_lib.train(_config(1_000), str(workdir))
    for a, b in zip(straight[1_000], leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def at_200(tmp_path_factory):
    """A work directory trained to step 200, checkpoints at 100 and 200."""
    workdir = tmp_path_factory.mktemp("at_200") / "w"
    train_lib.train(_config(200), str(workdir))
    assert _finished_steps(workdir) == [100, 200]
    return workdir


def _flip_bytes(step_dir: pathlib.Path) -> None:
    # The data file that restoring reads (files under ocdbt.process_*/ are merged into it).
    files = [p for p in (step_dir / "state" / "d").iterdir() if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    for i in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        data[i] ^= 0x5A
    largest.write_bytes(bytes(data))


DAMAGE = {
    # (what is done, the step training resumes from, words of the warning)
    "empty_newer_dir": (lambda ck: (ck / "300").mkdir(), 200, "is empty"),
    "partial_newest": (lambda ck: shutil.rmtree(ck / "200" / "state"), 100, "is partial"),
    "flipped_bytes": (lambda ck: _flip_bytes(ck / "200"), 100, "checkpoints/200 is unreadable"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_step_directories_are_skipped_through_the_cli(tmp_path, at_200, straight, damage):
    workdir = tmp_path / "w"
    shutil.copytree(at_200, workdir)
    apply, resumed_from, warning = DAMAGE[damage]
    apply(workdir / "checkpoints")
    proc = _cli_train(workdir, 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert warning in proc.stderr and f"Resumed from step {resumed_from}" in proc.stderr
    # The damaged directories are kept for inspection, out of the way.
    assert list((workdir / "checkpoints_unreadable").iterdir())
    step, final = _restored_leaves(workdir, 300)
    assert step == 300
    for a, b in zip(straight[300], final, strict=True):
        np.testing.assert_array_equal(a, b)


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

    exp = build_experiment(_config(200))
    with caplog.at_level(logging.WARNING, logger="scoresde_jax.run.checkpoint"):
        state = Checkpointer(str(workdir), read_only=True).restore(exp.abstract_target())
    assert int(state.step) == 100
    assert "checkpoints/200 is unreadable" in caplog.text
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
    exp = build_experiment(_config(100))
    with pytest.raises(CheckpointRestoreError, match="None of the checkpoints"):
        Checkpointer(str(workdir), read_only=True).restore(exp.abstract_target())
    assert jax.device_count() == 8


def _private_tmpfs_prefix(mount_point: pathlib.Path) -> list[str] | None:
    """A command prefix that runs its command in a private mount namespace where ``mount -t
    tmpfs`` works (as root, or as a user through a user namespace), or ``None``."""
    if shutil.which("unshare") is None:
        return None
    probe = f"mount -t tmpfs -o size=64k tmpfs {mount_point} && touch {mount_point}/probe"
    for prefix in (
        ["unshare", "--mount", "--propagation", "private"],
        ["unshare", "--user", "--map-root-user", "--mount"],
    ):
        try:
            done = subprocess.run([*prefix, "sh", "-c", probe], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    return None


def _tmpfs_bytes(root: pathlib.Path) -> int:
    """What a copy of ``root`` takes on a tmpfs: whole pages per file."""
    page = 4096
    return sum(-(-p.stat().st_size // page) * page for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_full_disk_ends_with_one_message_and_an_intact_checkpoint(tmp_path, at_200, straight):
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    prefix = _private_tmpfs_prefix(mount_point)
    if prefix is None:
        pytest.skip("cannot mount a small tmpfs here (no unshare, or mounts are not permitted)")
    # Room for the run as it is and a few small files, but not for another checkpoint. Only
    # step 200 is copied: with nothing older to delete, no space can be freed during the save
    # (Orbax may remove a checkpoint beyond the kept ones while the next one is written).
    staged = tmp_path / "staged"
    shutil.copytree(at_200, staged, symlinks=True)
    shutil.rmtree(staged / "checkpoints" / "100")
    checkpoint = _tmpfs_bytes(staged / "checkpoints" / "200")
    used = _tmpfs_bytes(staged)
    size_kib = (used + 8 * 4096 + checkpoint // 2) // 1024
    small = mount_point / "w"
    out = tmp_path / "after"
    cmd = [sys.executable, str(ROOT / "main.py"), "--config", str(ROOT / "configs/toy/gmm.py")]
    cmd += ["--workdir", str(small), "--mode", "train", "--config.training.n_iters=300"]
    script = (
        f"mount -t tmpfs -o size={size_kib}k tmpfs {mount_point} && cp -a {staged} {small} && "
        f"{shlex.join(cmd + CLI_OVERRIDES)}; rc=$?; cp -a {small} {out}; exit $rc"
    )
    proc = subprocess.run([*prefix, "sh", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert str(small) in errors[0] and "Could not write" in errors[0]
    assert "disk is full" in errors[0] or "no space left" in errors[0]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    # The last good checkpoint is intact, no partial directory is left, and training resumes
    # from it (on a disk with room) to the same state as an uninterrupted run.
    assert _finished_steps(out) == [200]
    assert not list((out / "checkpoints").glob("*tmp*"))
    resumed = train_lib.train(_config(300), str(out))
    for a, b in zip(straight[300], leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
