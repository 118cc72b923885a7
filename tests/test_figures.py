"""The latent modes and the toy figures end to end on a briefly trained 2-D Gaussian mixture.

One short training run (a few hundred steps, an EMA that follows the weights closely) feeds
``--mode encode | interpolate | temperature | toy_figures``; the checks are the properties that
hold for any smooth learned score (the flow is invertible, temperature 0 collapses every sample
onto one point) plus the files written.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from train_utils import override, xla_flags

from configs.mnist.ddpmpp_vp import get_config as mnist_config
from configs.toy.gmm import get_config
from scoresde_jax.modes import latent as manipulate
from scoresde_jax.modes.figures import toy_figures
from scoresde_jax.run.trainer import train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def toy_config(**overrides):
    config = get_config()
    return override(
        config,
        {
            "training.n_iters": 300,
            "training.snapshot_freq": 300,
            "training.log_freq": 100,
            "training.eval_freq": 300,
            "training.snapshot_sampling": False,
            "training.progress_bar": False,
            "training.batch_size": 256,
            "model.hidden": (64, 64),
            "model.ema_rate": 0.9,
            "optim.warmup": 50,
            "latent.num_inputs": 203,  # not a multiple of the 8 devices: padding is dropped
            "latent.num_pairs": 3,
            "latent.num_interpolation_steps": 5,
            "latent.temperatures": "0, 1",
            "latent.batch_size": 104,  # two sharded calls for the 203 inputs
            "latent.rtol": 1e-4,
            "latent.atol": 1e-4,
            "figures.score_times": "0.01,0.5,1.0",
            "figures.arrows": 7,
            "figures.num_trajectories": 5,
            "figures.sde_steps": 100,
            **overrides,
        },
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy")
    train(toy_config(), str(path))
    return path


def _png(path, min_bytes=5_000):
    path = pathlib.Path(path)
    assert path.exists() and path.stat().st_size > min_bytes, path
    assert path.read_bytes()[:4] == b"\x89PNG"
    return path


@pytest.mark.slow
def test_encode_interpolate_temperature_on_toy_data(workdir):
    config = toy_config()
    report = manipulate.encode_mode(config, str(workdir))
    assert report["step"] == 300 and report["num_inputs"] == 203
    assert report["failed_solves"] == 0 and report["nfe_round_trip_max"] > 20
    # The flow is invertible for any smooth score. A learned field is rougher than the exact one
    # (this run's round trip takes ~1000 evaluations at 1e-4), so the global error is ~100 times
    # the local tolerance; tests/test_latent.py checks exactness with the exact score. Mixed-up
    # rows or padding would give errors the size of the data (modes 1.5 apart).
    assert report["median_abs_error"] < 0.05 and report["max_abs_error"] < 0.15, report
    saved = np.load(report["npz"])
    assert saved["z"].shape == saved["x_rec"].shape == (203, 2)
    assert np.all(np.isfinite(saved["z"]))
    assert json.loads(pathlib.Path(report["npz"][:-4] + ".json").read_text())["step"] == 300
    _png(report["png"])

    report = manipulate.interpolate_mode(config, str(workdir))
    saved = np.load(report["npz"])
    assert saved["interpolants"].shape == (3, 5, 2) and saved["latents"].shape == (3, 5, 2)
    assert report["endpoint_max_abs_error"] < 0.15, report
    # The latent path is a great circle: constant angular steps between its endpoints.
    z = saved["latents"].astype(np.float64)
    unit = z / np.linalg.norm(z, axis=-1, keepdims=True)
    steps = np.arccos(np.clip(np.sum(unit[:, 1:] * unit[:, :-1], -1), -1, 1))
    np.testing.assert_allclose(steps, steps[:, :1] * np.ones_like(steps), atol=1e-3)
    _png(report["png"])

    report = manipulate.temperature_mode(config, str(workdir))
    per = report["per_temperature"]
    assert set(per) == {"0", "1"} and report["temperatures"] == [0.0, 1.0]
    # tau = 0: every latent is the prior mean, so every sample is the same point.
    assert per["0"]["sample_std"] < 1e-5 and per["1"]["sample_std"] > 0.3, per
    samples = np.load(report["npz"])["samples"]
    assert samples.shape == (2, 203, 2) and np.all(np.isfinite(samples))
    _png(report["png"])


@pytest.mark.slow
def test_toy_figures_and_cli(workdir):
    report = toy_figures(toy_config(), str(workdir))
    assert report["score_times"] == [0.01, 0.5, 1.0]
    for path in (report["score_field_png"], report["trajectories_png"]):
        assert os.path.dirname(path) == str(workdir / "figures")
        assert _png(path, 20_000).stat().st_size < 400_000
    errors = report["score_errors"]
    assert set(errors) == {"t=0.01", "t=0.5", "t=1"}
    assert all(np.isfinite(e["error_weighted_by_density"]) for e in errors.values())
    assert report["ode_nfe"] > 10 and np.isfinite(report["ode_endpoints_mean_true_logp"])
    # Through main.py, with a field overridden on the command line.
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "main.py"),
            "--config",
            str(ROOT / "configs/toy/gmm.py"),
            "--workdir",
            str(workdir),
            "--mode=temperature",
            "--config.model.hidden=(64, 64)",
            "--config.latent.num_inputs=16",
            "--config.latent.temperatures=0.5",
            "--config.latent.rtol=1e-3",
            "--config.latent.atol=1e-3",
        ],
        cwd=ROOT,
        env=dict(os.environ, XLA_FLAGS=xla_flags()),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert out["temperatures"] == [0.5] and out["num_samples"] == 16


def test_modes_reject_bad_settings_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="not a 2-D toy set"):
        toy_figures(mnist_config(), str(tmp_path))
    with pytest.raises(ValueError, match="latent.temperatures"):
        manipulate.temperature_mode(toy_config(**{"latent.temperatures": "1,warm"}), "unused")
    with pytest.raises(ValueError, match="latent.temperatures"):
        manipulate.temperature_mode(toy_config(**{"latent.temperatures": "-1"}), "unused")
    with pytest.raises(ValueError, match="latent.split"):
        manipulate.encode_mode(toy_config(**{"latent.split": "validation"}), "unused")
    with pytest.raises(ValueError, match="Unknown ODE solver"):
        manipulate.interpolate_mode(toy_config(**{"latent.ode_solver": "rk4"}), "unused")
