"""The command line fails fast on bad input: one message naming the field or file and the fix,
exit status 2, no traceback, nothing left behind; ``--help`` exits 0."""

import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SCORESDE_SHARED", ROOT.parent / "shared"))
MNIST = SHARED / "data" / "mnist"
CIFAR = SHARED / "data" / "cifar10_partial" / "cifar10_partial_exact.npz"
MNIST_CONFIG = str(ROOT / "configs/mnist/ddpmpp_vp.py")
# Every case must be reported long before a model is built (which alone takes tens of seconds
# for these configs): the bound is generous for slow machines, not a benchmark.
FAST = 60.0


def run_cli(*args, env=None, module=None):
    cmd = [sys.executable, *(["-m", module] if module else [str(ROOT / "main.py")]), *args]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    return proc, time.monotonic() - t0


def assert_user_error(proc, seconds, *needles):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert seconds < FAST, seconds
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-3000:])


def test_help_exits_zero():
    proc, _ = run_cli("--help")
    assert proc.returncode == 0 and "usage: python main.py" in proc.stdout
    for mode in ("train", "eval", "sample", "stats", "toy_figures"):
        assert f"  {mode}" in proc.stdout


def test_converter_help_speaks_to_users():
    proc, _ = run_cli("--help", module="scoresde_jax.convert")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "usage: python -m scoresde_jax.convert" in text
    assert "--noise_levels" in text and "--checkpoint" in text
    # Not the maintainers' notes on how model modules plug in.
    assert "params_from_torch_state_dict" not in text


def test_missing_config_file(tmp_path):
    workdir = tmp_path / "w"
    proc, seconds = run_cli("--config", "configs/mnist/ddpmpp_vpp.py", "--workdir", str(workdir))
    assert_user_error(proc, seconds, "configs/mnist/ddpmpp_vpp.py", "no such config file")
    assert "ddpmpp_vp.py" in proc.stderr  # the closest existing file
    assert not workdir.exists()


@pytest.mark.parametrize(
    "override, needles",
    [
        ("--config.eval.nonexistent=1", ["config.eval has no field 'nonexistent'", "batch_size"]),
        ("--config.eval.batch_sise=8", ["did you mean config.eval.batch_size"]),
        ("--config.trainig.n_iters=8", ["config has no field 'trainig'", "config.training"]),
        ("--config.training.n_iters=abc", ["--config.training.n_iters=abc"]),
    ],
)
def test_bad_overrides_name_the_field(tmp_path, override, needles):
    workdir = tmp_path / "w"
    proc, seconds = run_cli("--config", MNIST_CONFIG, "--workdir", str(workdir), override)
    assert_user_error(proc, seconds, *needles)
    assert not workdir.exists()


@pytest.mark.parametrize(
    "override, needles",
    [
        ("--config.sampling.method=dpm_solver_ppp", ["sampling.method", "did you mean"]),
        ("--config.training.sde=vesd", ["training.sde", "'vesde'"]),
        ("--config.eval.ode_solver=rk45", ["eval.ode_solver", "tsit5"]),
        ("--config.eval.num_samples=0", ["eval.num_samples=0", "positive integer"]),
        ("--config.training.batch_size=7", ["training.batch_size=7", "8 devices"]),
        ("--config.training.n_jitted_steps=7", ["n_jitted_steps=7 must divide", "n_iters"]),
    ],
)
def test_bad_values_name_the_field(tmp_path, override, needles):
    workdir = tmp_path / "w"
    proc, seconds = run_cli(
        "--config", MNIST_CONFIG, "--workdir", str(workdir), override, "--config.data.path=/x"
    )
    assert_user_error(proc, seconds, *needles)
    assert not workdir.exists()


def test_missing_data_path(tmp_path):
    workdir = tmp_path / "w"
    proc, seconds = run_cli(
        "--config", MNIST_CONFIG, "--workdir", str(workdir), f"--config.data.path={tmp_path}/nope"
    )
    assert_user_error(proc, seconds, f"{tmp_path}/nope", "does not exist")
    assert not workdir.exists()


@pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(), reason="no MNIST")
def test_truncated_idx_file_is_named(tmp_path):
    data = tmp_path / "mnist"
    shutil.copytree(MNIST, data)
    damaged = data / "train-images-idx3-ubyte.gz"
    os.chmod(damaged, 0o644)
    damaged.write_bytes((MNIST / "train-images-idx3-ubyte.gz").read_bytes()[:200_000])
    workdir = tmp_path / "w"
    proc, seconds = run_cli(
        "--config", MNIST_CONFIG, "--workdir", str(workdir), f"--config.data.path={data}"
    )
    assert_user_error(proc, seconds, str(damaged), "truncated", "download it again")
    assert not workdir.exists()


def test_missing_checkpoint(tmp_path):
    workdir = tmp_path / "w"
    proc, seconds = run_cli(
        "--config", str(ROOT / "configs/toy/gmm.py"), "--workdir", str(workdir), "--mode", "eval"
    )
    assert_user_error(
        proc, seconds, "No checkpoint in", str(workdir / "checkpoints"), "--mode train"
    )
    assert not workdir.exists()


def test_traceback_switch_shows_the_traceback(tmp_path):
    args = ("--config", str(ROOT / "configs/toy/gmm.py"), "--workdir", str(tmp_path / "w"))
    proc, _ = run_cli(*args, "--mode", "eval", env={"SCORESDE_TRACEBACK": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "MissingCheckpointError" in proc.stderr
    proc, _ = run_cli(*args, "--mode", "eval", "--traceback")
    assert "Traceback" in proc.stderr and "MissingCheckpointError" in proc.stderr


@pytest.mark.skipif(not CIFAR.exists(), reason="no CIFAR-10 subset")
def test_data_of_another_dataset_is_refused(tmp_path):
    workdir = tmp_path / "w"
    proc, seconds = run_cli(
        "--config", MNIST_CONFIG, "--workdir", str(workdir), f"--config.data.path={CIFAR}"
    )
    assert_user_error(proc, seconds, "32x32x3", "MNIST", "28x28x1", "data.dataset")
    assert not workdir.exists()


def test_unwritable_workdir(tmp_path):
    if os.geteuid() == 0:
        # root writes anywhere; a read-only bind is what an unwritable directory is then.
        blocker = tmp_path / "file"
        blocker.write_text("")
        workdir = blocker / "w"  # below a regular file: cannot be created
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o500)
        workdir = ro / "w"
    proc, seconds = run_cli("--config", str(ROOT / "configs/toy/gmm.py"), "--workdir", str(workdir))
    assert_user_error(proc, seconds, f"--workdir={workdir}", "cannot write")
