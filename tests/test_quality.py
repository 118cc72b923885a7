"""Streaming Inception statistics: batching does not change features, identical sets score FID 0,
and a changed set does not (random Inception weights of the shared fixture)."""

import os
import pathlib

import numpy as np
import pytest

from scoresde_jax.metrics.fid import frechet_distance
from scoresde_jax.metrics.quality import (
    InceptionFeatures,
    inception_metrics,
    inception_statistics,
    save_reference_stats,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SCORESDE_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "fixtures" / "fid_inception_random" / "weights_fp16.npz"

pytestmark = pytest.mark.skipif(
    not WEIGHTS.exists(), reason=f"{WEIGHTS} is absent (set SCORESDE_SHARED)"
)


@pytest.fixture(scope="module")
def features():
    return InceptionFeatures(str(WEIGHTS), batch_size=4)


def test_batching_and_grayscale(features):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    pool, logits = features(images)
    assert pool.shape == (6, 2048) and logits.shape == (6, 1008)
    # 6 images in padded batches of 4 give the features of the images one by one.
    for i in (0, 5):
        p1, _ = features(images[i : i + 1])
        np.testing.assert_allclose(p1[0], pool[i], rtol=1e-5, atol=1e-5)
    gray = images[..., :1]
    np.testing.assert_allclose(features(gray)[0], features(np.repeat(gray, 3, -1))[0], atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        features(images.astype(np.float32))


def test_fid_of_a_set_with_itself_is_zero_and_not_otherwise(features, tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    ref, _ = inception_statistics([images[:5], images[5:]], features, keep_features=None)
    path = save_reference_stats(str(tmp_path / "ref.npz"), ref, dataset="random")
    same = inception_metrics([images], features, path, keep_features=12)
    assert abs(same["fid"]) < 1e-3, same
    assert any("not comparable to published" in w for w in same["warnings"])
    assert np.isfinite(same["inception_score"]) and same["inception_score"] >= 1.0

    # Darker images: a different distribution, a clearly positive distance.
    other = inception_metrics([images // 4], features, path)
    s = ref.to_stats()
    assert other["fid"] > 100 * max(abs(same["fid"]), 1e-6)
    direct, _ = inception_statistics([images // 4], features)
    d = direct.to_stats()
    assert other["fid"] == pytest.approx(frechet_distance(d.mu, d.sigma, s.mu, s.sigma), rel=1e-9)


def test_without_reference_only_the_inception_score(features):
    images = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    out = inception_metrics([images], features, None)
    assert "fid" not in out and "inception_score" in out
    assert any("--mode stats" in w for w in out["warnings"])
