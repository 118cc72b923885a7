"""Evaluation results are keyed by their settings: other settings never reuse or overwrite them,
identical settings reuse finished work (also across progress-bar or log changes), a killed
evaluation resumes only its own work, and every report stays on disk and says what it is."""

import json
import math
import pathlib
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from test_image_e2e import needs_mnist, tiny_config

from scoresde_jax.modes import evaluate as evaluate_lib
from scoresde_jax.run import results
from scoresde_jax.run.checkpoint import Checkpointer
from scoresde_jax.run.experiment import build_experiment

pytestmark = [needs_mnist, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of the tiny MNIST network (its initial weights, saved as step 2): what is
    evaluated does not matter here, only which settings the results belong to. Tests evaluate
    copies of this work directory."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    exp = build_experiment(_config())
    ckpt = Checkpointer(str(workdir), async_save=False)
    ckpt.save(exp.init_state().replace(step=jnp.asarray(2, jnp.int32)))
    ckpt.close()
    return workdir


def _copy(trained, tmp_path) -> pathlib.Path:
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    return workdir


def _config(**fields):
    base = {
        # One device: batch sizes are then exactly what the settings ask for, and compiling
        # for one device is quicker.
        "num_devices": 1,
        "training.n_iters": 2,
        "training.snapshot_freq": 2,
        "eval.enable_loss": False,
        "eval.batch_size": 32,
        "eval.num_repeats": 1,
    }
    return tiny_config(**{**base, **fields})


def _no_nan(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in a report")

    return json.loads(text, parse_constant=refuse)


def test_sampler_settings_get_their_own_results_and_reports(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("SCORESDE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no Inception weights in the default cache
    workdir = _copy(trained, tmp_path)
    sampling = {"eval.enable_sampling": True, "eval.num_samples": 8}
    fast = _config(**sampling, **{"sampling.method": "dpm_solver_pp", "sampling.num_steps": 3})
    pc = _config(**sampling, **{"sampling.method": "pc", "sampling.num_steps": 5})
    a = evaluate_lib.evaluate(fast, str(workdir))
    b = evaluate_lib.evaluate(pc, str(workdir))
    assert (a["sampler"], a["sampling_nfe"]) == ("dpm_solver_pp", 3)
    assert b["sampler"] == "pc" and b["sampling_nfe"] != a["sampling_nfe"]
    assert a["sample_dir"] != b["sample_dir"] and a["fd_mnist"] != b["fd_mnist"]
    assert not b["reused"]["sampling"]["reused"]
    # num_samples below eval.batch_size: one round of 8 samples, not a round of 32.
    assert a["settings"]["sampling"]["batch_size"] == 8
    assert len(list(pathlib.Path(a["sample_dir"]).glob("samples_*.npz"))) == 1
    # Both reports stay on disk with their own sampler; the stable path is the newer one.
    kept_a = _no_nan(pathlib.Path(a["report_path"]).read_text())
    kept_b = _no_nan(pathlib.Path(b["report_path"]).read_text())
    assert kept_a["sampler"] == "dpm_solver_pp" and kept_a["fd_mnist"] == a["fd_mnist"]
    assert kept_b["settings"]["sampling"]["sampler"]["method"] == "pc"
    latest = _no_nan((workdir / "eval" / "latest_step_2.json").read_text())
    assert latest["fingerprint"] == b["fingerprint"] != a["fingerprint"]
    assert len(list((workdir / "eval" / "reports").glob("step_2_*.json"))) == 2
    # The rounds of the first settings are untouched and their settings are written beside them.
    stored = json.loads((pathlib.Path(a["sample_dir"]) / "settings.json").read_text())
    assert stored["settings"]["sampler"]["method"] == "dpm_solver_pp"
    assert stored["fingerprint"] == pathlib.Path(a["sample_dir"]).name.split("-")[1]
    # No Inception weights: the report and the log say that FID/KID/IS were skipped, and how
    # to get the weights.
    assert "no FID Inception weights" in a["skipped_metrics"]["fid_kid_inception_score"]
    assert "curl" in a["skipped_metrics"]["fid_kid_inception_score"]

    # The same settings again: every round is reused, and says so.
    again = evaluate_lib.evaluate(fast, str(workdir))
    assert (
        again["reused"]["sampling"]["reused"]
        and again["reused"]["sampling"]["computed_rounds"] == 0
    )
    assert again["fd_mnist"] == a["fd_mnist"] and again["fingerprint"] == a["fingerprint"]


def test_bpd_settings_reuse_resume_and_keep_their_results(trained, tmp_path, monkeypatch):
    workdir = _copy(trained, tmp_path)
    reference_dir = _copy(trained, tmp_path / "reference")
    bpd = {"eval.enable_bpd": True, "eval.max_examples": 16}
    coarse = _config(**bpd, **{"eval.rtol": 1e-2, "eval.atol": 1e-2, "eval.batch_size": 8})
    fine = _config(**bpd, **{"eval.rtol": 2e-3, "eval.atol": 2e-3, "eval.batch_size": 8})

    # The coarse evaluation is killed after its first batch (of two) was saved.
    real_save = evaluate_lib.atomic_savez
    calls = []

    def killed_after_first_batch(path, **arrays):
        real_save(path, **arrays)
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(evaluate_lib, "atomic_savez", killed_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate_lib.evaluate(coarse, str(workdir))
    monkeypatch.setattr(evaluate_lib, "atomic_savez", real_save)
    (partial,) = (workdir / "eval" / "step_2").glob("bpd_test-*/repeat_0.npz")
    assert int(np.load(partial)["next_batch"]) == 1 and not bool(np.load(partial)["complete"])

    # Other tolerances: their own directory, computed from the start; the partial work of the
    # coarse settings is left as it was.
    f = evaluate_lib.evaluate(fine, str(workdir))
    assert f["settings"]["bpd_test"]["dir"] != str(partial.parent)
    assert not f["reused"]["bpd_test"]["reused"] and f["bpd_test_examples"] == 16
    assert int(np.load(partial)["next_batch"]) == 1

    # The coarse settings again: they resume at their second batch and end exactly where an
    # uninterrupted evaluation ends.
    c = evaluate_lib.evaluate(coarse, str(workdir))
    straight = evaluate_lib.evaluate(coarse, str(reference_dir))
    assert c["bpd_test"] == straight["bpd_test"] and c["bpd_test_examples"] == 16
    np.testing.assert_array_equal(
        np.load(partial)["bpd"],
        np.load(next((reference_dir / "eval" / "step_2").glob("bpd_test-*/repeat_0.npz")))["bpd"],
    )
    assert c["bpd_test"] != f["bpd_test"]
    for report, tol in ((c, 1e-2), (f, 2e-3)):
        settings = report["settings"]["bpd_test"]
        assert (
            settings["likelihood"]["rtol"] == tol and settings["likelihood"]["exact_trace"] is False
        )
        assert settings["checkpoint"]["weights"] == "ema" and settings["examples"] == 16
        assert settings["batch_size"] == 8 and report["weights"] == "ema"
    # Both sets of figures are still on disk.
    reports = [_no_nan(p.read_text()) for p in (workdir / "eval" / "reports").glob("*.json")]
    assert {r["bpd_test"] for r in reports} == {c["bpd_test"], f["bpd_test"]}

    # Identical settings, other progress-bar and log settings: finished work is reused.
    quiet = _config(
        **bpd,
        **{"eval.rtol": 1e-2, "eval.atol": 1e-2, "eval.batch_size": 8},
        **{"training.progress_bar": True, "training.log_freq": 1, "eval.begin_ckpt": 7},
    )
    q = evaluate_lib.evaluate(quiet, str(workdir))
    assert q["reused"]["bpd_test"]["reused"] and q["reused"]["bpd_test"]["computed_passes"] == 0
    assert q["bpd_test"] == c["bpd_test"] and q["fingerprint"] == c["fingerprint"]
    # The fingerprint in the directory name is that of the settings stored inside it.
    stored = json.loads((partial.parent / "settings.json").read_text())
    assert results.fingerprint(stored["settings"]) == partial.parent.name.split("-")[1]


def test_one_example_report_is_strict_json(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    report = evaluate_lib.evaluate(
        _config(**{"eval.enable_loss": True, "eval.max_examples": 1}), str(workdir)
    )
    # One example has no standard error: the report says null, not NaN (invalid JSON).
    assert report["eval_loss_examples"] == 1 and report["eval_loss_stderr"] is None
    saved = _no_nan(pathlib.Path(report["latest_path"]).read_text())
    assert saved["eval_loss_stderr"] is None and math.isfinite(saved["eval_loss"])
    assert saved["settings"]["eval_loss"]["batch_size"] == 1  # not a padded batch of 32


# Fingerprints of the network settings as the previous release computed them (its configs still
# carried model.normalization): results stored under them must still be found.
_PREVIOUS_NETWORK_FINGERPRINTS = {
    "vp/cifar10_ddpmpp_continuous.py": "211989700d6c",
    "ve/cifar10_ncsnpp_continuous.py": "ce025789e12f",
    "ve/ncsn/cifar10.py": "e1a3e0b71cd4",
    "ve/ncsnv2/cifar10.py": "8fe17b501377",
    "toy/gmm.py": "b8a64a83b6e5",
    "mnist/ddpmpp_vp.py": "79461cbe9b43",
    "mnist/ncsnpp_ve.py": "774bb0f9ab99",
    "vp/cifar10_ddpm.py": "5a1259a8e926",
}


@pytest.mark.parametrize("name", sorted(_PREVIOUS_NETWORK_FINGERPRINTS))
def test_network_fingerprints_survive_the_retired_normalization_field(name):
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / name
    spec = importlib.util.spec_from_file_location("_config_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    assert "normalization" not in config.model
    got = results.fingerprint(results.network_settings(config))
    assert got == _PREVIOUS_NETWORK_FINGERPRINTS[name]
