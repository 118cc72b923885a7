"""One writer per work directory: refusals name the holder, dead holders are taken over."""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from scoresde_jax.errors import WorkdirLockedError
from scoresde_jax.run import workdir_lock
from scoresde_jax.run.workdir_lock import WorkdirLock


def _fake_holder(path, **fields):
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": None,
        "mode": "train",
        "started": time.time() - 100,
        "heartbeat": time.time(),
        "lease_s": 120.0,
        "token": "someone-else",
    }
    record.update(fields)
    path.write_text(json.dumps(record))
    return record


def test_second_lock_is_refused_with_the_holders_identity(tmp_path):
    with WorkdirLock(str(tmp_path), "train", mode="train"):
        holder = json.loads((tmp_path / "train.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(WorkdirLockedError) as err:
            WorkdirLock(str(tmp_path), "train").acquire()
        message = str(err.value)
        assert f"process {os.getpid()} on host {socket.gethostname()}" in message
        assert "started" in message and str(tmp_path) in message
        # Another writer of the same directory (evaluation) has its own lock.
        with WorkdirLock(str(tmp_path), "eval"):
            pass
    assert not (tmp_path / "train.lock").exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _fake_holder(tmp_path / "train.lock", pid=int(dead.stdout))
    with caplog.at_level(logging.WARNING, logger="scoresde_jax.run.workdir_lock"):
        lock = WorkdirLock(str(tmp_path), "train").acquire()
    try:
        assert "Took over the lock" in caplog.text and "is gone" in caplog.text
        assert json.loads((tmp_path / "train.lock").read_text())["token"] == lock.token
    finally:
        lock.release()


def test_reused_process_id_is_not_the_holder(tmp_path):
    # The holder's pid runs (it is ours) but started at another time: the id was reused.
    _fake_holder(tmp_path / "train.lock", pid_start="1")
    with WorkdirLock(str(tmp_path), "train") as lock:
        assert json.loads((tmp_path / "train.lock").read_text())["token"] == lock.token


def test_other_host_is_refused_until_its_lease_expires(tmp_path, caplog):
    path = tmp_path / "train.lock"
    _fake_holder(path, host="elsewhere-7", pid=1, heartbeat=time.time() - 30, lease_s=120.0)
    with pytest.raises(WorkdirLockedError, match="host elsewhere-7.*expires in 9[0-9] s"):
        WorkdirLock(str(tmp_path), "train").acquire()
    # The same record with a heartbeat older than its lease: that host is gone.
    _fake_holder(path, host="elsewhere-7", pid=1, heartbeat=time.time() - 130, lease_s=120.0)
    with caplog.at_level(logging.WARNING, logger="scoresde_jax.run.workdir_lock"):
        with WorkdirLock(str(tmp_path), "train"):
            assert "lease expired" in caplog.text


def test_heartbeat_renews_and_a_lost_lock_is_noticed(tmp_path, monkeypatch):
    monkeypatch.setenv("SCORESDE_LOCK_LEASE_S", "0.4")
    lock = WorkdirLock(str(tmp_path), "train").acquire()
    try:
        first = json.loads((tmp_path / "train.lock").read_text())["heartbeat"]
        time.sleep(0.35)
        assert json.loads((tmp_path / "train.lock").read_text())["heartbeat"] > first
        lock.check()
        # Another process takes the lock over (as after a long pause of this one).
        _fake_holder(tmp_path / "train.lock", token="thief")
        deadline = time.monotonic() + 5
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(WorkdirLockedError, match="lost the lock"):
            lock.check()
    finally:
        lock.release()
    # Releasing does not delete the new holder's lock.
    assert json.loads((tmp_path / "train.lock").read_text())["token"] == "thief"


def test_hold_is_reentrant_within_a_process(tmp_path):
    with workdir_lock.hold(str(tmp_path), "train") as outer:
        with workdir_lock.hold(str(tmp_path), "train") as inner:
            assert inner is outer
        assert (tmp_path / "train.lock").exists()
    assert not (tmp_path / "train.lock").exists()


def test_bad_lease_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SCORESDE_LOCK_LEASE_S", "soon")
    with pytest.raises(WorkdirLockedError, match="SCORESDE_LOCK_LEASE_S"):
        workdir_lock.lease_seconds()
