"""Multi-host training on one machine: two ``main.py`` processes joined by ``jax.distributed``.

Each process sees 2 CPU devices (4 in total), exactly as two hosts of a small pod slice would.
The job must write one set of logs (process 0's), checkpoints that restore in an ordinary single
process, and the same parameters as a single-process run on 4 devices: the toy batches and the
random keys depend only on the step, so only the order of the cross-device reductions differs.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from train_utils import override, xla_flags

from configs.toy.gmm import get_config
from scoresde_jax.run.checkpoint import Checkpointer
from scoresde_jax.run.experiment import build_experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A small and fast version of the toy job; applied both on the command line and in this process.
OVERRIDES = {
    "model.hidden": (32, 32),
    "model.embed_dim": 16,
    "data.n_train": 2_000,
    "training.n_iters": 200,
    "training.n_jitted_steps": 50,
    "training.snapshot_freq": 100,
    "training.log_freq": 50,
    "training.snapshot_sampling": False,
    "training.progress_bar": False,
}
NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
TIMEOUT_S = 75


def _config():
    return override(get_config(), OVERRIDES)


def _command(workdir, mode: str, *extra: str) -> list[str]:
    flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    return [
        sys.executable,
        str(ROOT / "main.py"),
        "--config",
        str(ROOT / "configs" / "toy" / "gmm.py"),
        "--workdir",
        str(workdir),
        "--mode",
        mode,
        *flags,
        *extra,
    ]


def _env(num_devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COORDINATOR")}
    env.update(
        XLA_FLAGS=xla_flags(num_devices),
        JAX_PLATFORMS="cpu",
    )
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_together(commands: dict, log_dir: pathlib.Path, timeout: float) -> dict:
    """Starts every ``name: (argv, env)`` at once and waits for all; fails if any fails.

    As soon as one process fails (or the time is up) the others are killed: a peer left alone
    would wait for the dead one at its next collective.
    """
    procs, logs = {}, {}
    for name, (argv, env) in commands.items():
        logs[name] = (open(log_dir / f"{name}.out", "w"), open(log_dir / f"{name}.err", "w"))
        procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=logs[name][0], stderr=logs[name][1]
        )
    deadline = time.monotonic() + timeout
    failed = None
    try:
        while any(p.poll() is None for p in procs.values()):
            failed = failed or next(
                (n for n, p in procs.items() if p.poll() not in (None, 0)), None
            )
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
        for out, err in logs.values():
            out.close()
            err.close()
    codes = {name: p.returncode for name, p in procs.items()}
    if any(codes.values()):
        report = [f"exit codes {codes} after at most {timeout} s"]
        for name in commands:
            err = (log_dir / f"{name}.err").read_text()[-3000:]
            report.append(f"--- {name} stderr (last 3000 characters) ---\n{err}")
        pytest.fail("\n".join(report))
    return {name: (log_dir / f"{name}.out").read_text() for name in commands}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(multi-host workdir, single-process workdir)``, both trained to step 200."""
    base = tmp_path_factory.mktemp("multihost")
    multi, single = base / "run", base / "single"
    address = f"localhost:{_free_port()}"
    job = {
        f"process_{i}": (
            _command(
                multi,
                "train",
                f"--coordinator_address={address}",
                f"--num_processes={NUM_PROCESSES}",
                f"--process_id={i}",
            ),
            _env(DEVICES_PER_PROCESS),
        )
        for i in range(NUM_PROCESSES)
    }
    _run_together(job, base, TIMEOUT_S)
    n_total = NUM_PROCESSES * DEVICES_PER_PROCESS
    reference = {
        "single": (_command(single, "train", f"--config.num_devices={n_total}"), _env(n_total))
    }
    _run_together(reference, base, TIMEOUT_S)
    return multi, single


def _restore(workdir, step: int):
    # This process has 8 devices: the replicated parameters written by the 2 x 2-device job
    # restore onto a mesh of a different size and process count.
    exp = build_experiment(_config())
    return Checkpointer(str(workdir), read_only=True).restore(exp.abstract_target(), step)


@pytest.mark.slow
def test_two_processes_train_like_one(runs):
    multi, single = runs
    ckpt = Checkpointer(str(multi), read_only=True)
    assert ckpt.all_steps() == [100, 200]
    # One lock for the job (a lock per process would have refused process 1), released at the end.
    assert not (multi / "train.lock").exists()
    for step in (100, 200):
        state = _restore(multi, step)
        assert int(jax.device_get(state.step)) == step
        leaves = jax.tree.leaves(state.params)
        assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves)

    # Only process 0 logs: one row per log_freq steps, not one per process.
    rows = [json.loads(line) for line in (multi / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [50, 100, 150, 200]
    ref_rows = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in ref_rows], rtol=1e-4)

    got, want = _restore(multi, 200), _restore(single, 200)
    for name in ("params", "ema_params"):
        flat_got = jax.tree_util.tree_leaves_with_path(getattr(got, name))
        flat_want = jax.tree_util.tree_leaves_with_path(getattr(want, name))
        assert len(flat_got) == len(flat_want)
        for (path, a), (_, b) in zip(flat_got, flat_want, strict=True):
            a, b = np.asarray(a), np.asarray(b)
            scale = max(float(np.abs(b).max()), 1e-6)
            err = float(np.abs(a - b).max()) / scale
            assert err < 2e-4, f"{name}{jax.tree_util.keystr(path)}: relative error {err:.2e}"


@pytest.mark.slow
def test_eval_after_multihost_training(runs):
    multi, _ = runs
    small_eval = [
        "--config.data.n_test=200",
        "--config.eval.batch_size=200",
        "--config.eval.num_samples=200",
        "--config.sampling.num_steps=100",
    ]
    out = _run_together(
        {"eval": (_command(multi, "eval", *small_eval), _env(DEVICES_PER_PROCESS))},
        multi.parent,
        TIMEOUT_S,
    )["eval"]
    report = json.loads(out[out.index("{") :])
    assert report["step"] == 200 and report["num_test"] == 200
    assert np.isfinite(report["test_nll_nats"])
    assert pathlib.Path(report["report_path"]).exists()
