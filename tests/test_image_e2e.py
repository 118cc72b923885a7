"""End to end on real images: a tiny network trains on MNIST read from the original IDX files,
checkpoints, resumes exactly, evaluates loss and bits/dim with a padded last batch, writes
samples in resumable rounds and TensorBoard logs; the TFDS path runs under ``mock_data``."""

import json
import os
import pathlib

import numpy as np
import pytest
from train_utils import leaves, override

from configs.mnist.ddpmpp_vp import get_config
from scoresde_jax.modes.evaluate import evaluate, sample
from scoresde_jax.run import trainer as train_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SCORESDE_SHARED", ROOT.parent / "shared"))
MNIST = SHARED / "data" / "mnist"


def tiny_config(**overrides):
    config = get_config()
    m = config.model
    m.nf = 8
    m.ch_mult = (1,)
    m.num_res_blocks = 1
    m.attn_resolutions = ()
    m.dropout = 0.0
    t = config.training
    t.batch_size = 16
    t.n_iters = 4
    t.n_jitted_steps = 1
    t.log_freq = 2
    t.eval_freq = 2
    t.snapshot_freq = 4
    t.snapshot_freq_for_preemption = 2
    t.snapshot_samples = 8
    t.progress_bar = False
    config.sampling.num_steps = 4
    config.optim.warmup = 2
    config.data.path = str(MNIST)
    e = config.eval
    e.batch_size = 16
    e.max_examples = 20  # two batches of 16: the second holds 4 real examples and 12 of padding
    e.rtol = e.atol = 1e-3
    return override(config, overrides)


needs_mnist = pytest.mark.skipif(
    not (MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason=f"MNIST IDX files not found in {MNIST} (set SCORESDE_SHARED)",
)


@needs_mnist
@pytest.mark.slow
def test_mnist_train_resume_eval_sample(tmp_path):
    straight = train_lib.train(tiny_config(), str(tmp_path / "straight"))
    workdir = tmp_path / "run"
    train_lib.train(tiny_config(**{"training.n_iters": 2}), str(workdir))
    resumed = train_lib.train(tiny_config(), str(workdir))
    assert int(resumed.step) == 4
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)

    # Logs: metrics.jsonl and TensorBoard scalars and the sample grid of the snapshot.
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert any("eval_loss" in r for r in rows)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert [e.step for e in acc.Scalars("loss")] == [2, 4]
    assert "samples" in acc.Tags()["images"]
    assert (workdir / "samples" / "step_4.png").stat().st_size > 100

    config = tiny_config(
        **{
            "eval.enable_bpd": True,
            "eval.num_repeats": 2,
            "eval.enable_sampling": True,
            "eval.num_samples": 20,  # rounds of 16: the second is cut to 4
        }
    )
    report = evaluate(config, str(workdir))
    assert report["step"] == 4
    assert report["eval_loss_examples"] == 20 and np.isfinite(report["eval_loss"])
    # Padding is masked out: 20 examples per repeat, each bits/dim a plausible value.
    assert report["bpd_test_examples"] == 20
    assert report["bpd_test_failed_solves"] == 0
    assert 0.5 < report["bpd_test"] < 30
    assert len(report["bpd_test_per_repeat"]) == 2
    out = workdir / "eval" / "step_4"
    (sample_dir,) = out.glob("samples-*")
    assert sample_dir == pathlib.Path(report["sample_dir"])
    rounds = sorted(sample_dir.glob("samples_*.npz"))
    assert [p.name for p in rounds] == ["samples_0.npz", "samples_1.npz"]
    first = np.load(rounds[0])["samples"]
    assert first.dtype == np.uint8 and first.shape == (16, 28, 28, 1)
    saved = json.loads((workdir / "eval" / "latest_step_4.json").read_text())
    assert saved["bpd_test"] == report["bpd_test"]
    assert saved["settings"]["sampling"]["nfe"] == report["sampling_nfe"]
    # No Inception weights here: sample quality is the FD in the MNIST classifier's features,
    # huge for an untrained network's samples next to the test set.
    assert report["fd_mnist_num_samples"] == 20 and report["fd_mnist"] > 100
    assert "fid" not in report

    # A preempted evaluation resumes: finished rounds and repeats are not redone.
    before = rounds[0].stat().st_mtime_ns
    rounds[1].unlink()
    again = evaluate(config, str(workdir))
    assert rounds[1].exists() and rounds[0].stat().st_mtime_ns == before
    assert again["bpd_test"] == report["bpd_test"]
    assert again["reused"]["sampling"]["reused_rounds"] == 1
    assert again["reused"]["bpd_test"]["reused_passes"] == 2

    result = sample(config, str(workdir))
    images = np.load(result["npz"])["samples"]
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)


@pytest.mark.slow
def test_tfds_dataset_trains_and_evaluates_under_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    config = tiny_config(
        **{
            "data.path": None,
            "data.source": "tfds",
            "data.dataset": "mnist",
            "training.n_iters": 2,
            "training.snapshot_freq": 2,
            "training.snapshot_sampling": False,
        }
    )
    with tfds.testing.mock_data(num_examples=40):
        state = train_lib.train(config, str(tmp_path))
        report = evaluate(config, str(tmp_path))
    assert int(state.step) == 2
    assert report["eval_loss_examples"] == 20 and np.isfinite(report["eval_loss"])


INCEPTION = SHARED / "fixtures" / "fid_inception_random" / "weights_fp16.npz"


@needs_mnist
@pytest.mark.slow
@pytest.mark.skipif(not INCEPTION.exists(), reason=f"{INCEPTION} is absent")
def test_reference_stats_then_fid_in_eval(tmp_path):
    """--mode stats writes Inception and classifier statistics; eval then reports FID and KID
    against them (random Inception weights: the numbers are checked for consistency only)."""
    workdir = tmp_path / "run"
    config = tiny_config(**{"training.n_iters": 2, "training.snapshot_freq": 2})
    config.training.snapshot_sampling = False
    train_lib.train(config, str(workdir))
    from scoresde_jax.metrics import load_stats
    from scoresde_jax.modes.evaluate import reference_stats

    config.eval.inception_weights = str(INCEPTION)
    config.eval.max_examples = 12
    config.eval.inception_batch_size = 4
    written = reference_stats(config, str(workdir))
    ref = load_stats(written["inception"])
    assert written["num_examples"] == 12 and ref.features.shape == (12, 2048)
    assert ref.mu.shape == (2048,) and os.path.exists(written["classifier_mnist"])
    assert not written["inception_reused"]
    # Statistics are keyed by their settings: the same ones are reused, others written beside.
    again = reference_stats(config, str(workdir))
    assert again["inception_reused"] and again["inception_keyed"] == written["inception_keyed"]
    config.eval.max_examples = 8
    fewer = reference_stats(config, str(workdir))
    assert fewer["inception_keyed"] != written["inception_keyed"] and fewer["num_examples"] == 8
    assert load_stats(written["inception_keyed"]).features.shape == (12, 2048)
    assert load_stats(fewer["inception"]).features.shape == (8, 2048)  # the newest
    config.eval.max_examples = 12
    written = reference_stats(config, str(workdir))
    assert written["inception_reused"]

    config.eval.fid_stats_path = written["inception"]
    config.eval.enable_loss = False
    config.eval.enable_sampling = True
    config.eval.num_samples = 10
    report = evaluate(config, str(workdir))
    assert np.isfinite(report["fid"]) and report["fid"] > 0
    assert np.isfinite(report["kid"]) and np.isfinite(report["inception_score"])
    assert report["fd_mnist_num_samples"] == 10
    assert any("not comparable to published" in w for w in report["warnings"])

    config.eval.fid_stats_path = str(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="--mode stats"):
        evaluate(config, str(workdir))
