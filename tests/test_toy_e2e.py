"""End to end: the toy job trains, beats a fitted Gaussian in NLL, and the CLI writes outputs."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from train_utils import xla_flags

from configs.toy.gmm import get_config
from scoresde_jax.modes.evaluate import evaluate
from scoresde_jax.run.trainer import train

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_toy_model_beats_a_single_gaussian(tmp_path):
    config = get_config()
    config.training.n_iters = 3_000
    config.training.snapshot_freq = 3_000
    config.training.log_freq = 1_000
    config.training.snapshot_sampling = False
    config.training.progress_bar = False
    # One device (sharding is tested elsewhere; 8 fake devices on 2 cores make this test 4x
    # slower), 500 test points and 500 sampler steps keep it short; the margins below are wide.
    config.num_devices = 1
    config.data.n_test = 500
    config.eval.num_samples = 1_000
    config.eval.rtol = config.eval.atol = 1e-4
    config.sampling.num_steps = 500
    workdir = str(tmp_path)
    train(config, workdir)
    report = evaluate(config, workdir)
    assert report["step"] == 3_000
    # A mixture of 8 separated bumps: one Gaussian is a poor fit; the true density is the floor.
    # The margin is many standard errors wide.
    margin = report["gaussian_baseline_nll_nats"] - report["test_nll_nats"]
    assert margin > 10 * report["test_nll_stderr"], report
    assert report["test_nll_nats"] > report["true_nll_nats"] - 5 * report["test_nll_stderr"], report
    assert os.path.getsize(report["samples_png"]) > 10_000
    # 1000 samples: the binomial standard error of a weight of 0.2 is 0.013.
    assert report["max_component_weight_error"] < 0.06, report


@pytest.mark.slow
def test_cli_train_then_eval(tmp_path):
    workdir = tmp_path / "run"
    common = [
        sys.executable,
        str(ROOT / "main.py"),
        "--config",
        str(ROOT / "configs/toy/moons.py"),
        "--workdir",
        str(workdir),
        "--config.training.n_iters=200",
        "--config.training.snapshot_freq=200",
        "--config.training.log_freq=100",
        "--config.training.snapshot_samples=200",
        "--config.sampling.num_steps=100",
        "--config.data.n_test=200",
        "--config.eval.batch_size=200",
        "--config.eval.num_samples=200",
        "--config.sampling.batch_size=100",
    ]
    env = dict(os.environ, XLA_FLAGS=xla_flags())
    run = lambda mode: subprocess.run(
        [*common, f"--mode={mode}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    proc = run("train")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train" in proc.stderr  # the progress bar
    assert (workdir / "samples" / "step_200.png").exists()
    proc = run("eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert report["step"] == 200 and report["num_samples"] == 200
    assert pathlib.Path(report["samples_png"]).exists()
    assert pathlib.Path(report["report_path"]).exists()
    # --mode sample with another sampler, chosen from the command line.
    proc = subprocess.run(
        [*common, "--mode=sample", "--config.sampling.method=ode"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert out["num_samples"] == 100 and out["nfe"] > 10
    ode = np.load(out["npz"])["samples"]
    assert ode.shape == (100, 2)
    assert pathlib.Path(out["png"]).exists()
    ode_dir = pathlib.Path(out["sample_dir"])
    assert (
        json.loads((ode_dir / "settings.json").read_text())["settings"]["sampler"]["method"]
        == "ode"
    )
    # Another sampler gets its own directory; the ODE samples stay, the stable path is the newest.
    proc = subprocess.run(
        [*common, "--mode=sample"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pc = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert pc["sample_dir"] != out["sample_dir"] and pc["fingerprint"] != out["fingerprint"]
    np.testing.assert_array_equal(np.load(ode_dir / "samples.npz")["samples"], ode)
    newest = np.load(pc["npz"])["samples"]
    np.testing.assert_array_equal(
        newest, np.load(pathlib.Path(pc["sample_dir"]) / "samples.npz")["samples"]
    )
    assert not np.array_equal(newest, ode)


def test_eval_without_checkpoint_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="--mode train"):
        evaluate(get_config(), str(tmp_path))
