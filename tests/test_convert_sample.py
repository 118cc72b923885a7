"""Published-checkpoint path end to end: convert PyTorch weights with our own CIFAR-10 config,
then draw samples from the converted checkpoint through the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_utils import xla_flags

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCORESDE_SHARED", REPO.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "ncsnpp_ve_small"


@pytest.mark.slow
def test_convert_then_sample_with_repo_config(tmp_path):
    if not FIXTURE.exists():
        pytest.skip(f"parity fixture {FIXTURE} is absent; set SCORESDE_SHARED")
    # The fixture is NCSN++ cont. (VE) with nf=32 and one residual block: our config file with
    # the same two overrides must describe exactly that network, or the conversion fails.
    arch = ["--config.model.nf=32", "--config.model.num_res_blocks=1"]
    config = ["--config", str(REPO / "configs/ve/cifar10.py"), *arch]
    workdir = tmp_path / "run"
    env = dict(os.environ, XLA_FLAGS=xla_flags(1))
    run = lambda args: subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO
    )
    proc = run(
        ["-m", "scoresde_jax.convert", *config, "--source=torch"]
        + [f"--checkpoint={FIXTURE / 'state_dict.npz'}", f"--workdir={workdir}"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(
        ["main.py", *config, f"--workdir={workdir}", "--mode=sample"]
        + ["--config.sampling.batch_size=2", "--config.sampling.num_steps=10"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    # Reverse-diffusion predictor + one Langevin corrector step: 2 evaluations per step.
    assert out["nfe"] == 20 and out["num_samples"] == 2
    images = np.load(out["npz"])["samples"]
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert Path(out["png"]).stat().st_size > 1000
    # The converted checkpoint evaluates on real CIFAR-10 images (the local subset's test split).
    cifar = SHARED / "data" / "cifar10_partial" / "cifar10_partial_exact.npz"
    if not cifar.exists():
        pytest.skip(f"{cifar} is absent")
    proc = run(
        ["main.py", *config, f"--workdir={workdir}", "--mode=eval", f"--config.data.path={cifar}"]
        + ["--config.eval.max_examples=3"]  # one batch of 3: each ODE evaluation is costly
        + ["--config.eval.enable_bpd=True", "--config.eval.num_repeats=1"]
        + ["--config.eval.rtol=1e-2", "--config.eval.atol=1e-2"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert report["step"] == out["step"] and report["eval_loss_examples"] == 3
    assert np.isfinite(report["eval_loss"]) and report["bpd_test_examples"] == 3
    assert np.isfinite(report["bpd_test"]) and report["bpd_test"] > 0
