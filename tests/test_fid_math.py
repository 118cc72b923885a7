"""Tests of scoresde_jax.metrics.fid: Fréchet distance, streaming statistics, Inception Score,
KID, reference statistics files and the metric report, against closed forms and direct formulas."""

import itertools

import numpy as np
import pytest
import scipy.linalg

from scoresde_jax.metrics.fid import (
    FeatureStats,
    ISAccumulator,
    Stats,
    compute_metrics,
    fid_sample_warning,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_stats,
    load_stats_meta,
    save_stats,
)


def _random_spd(rng, d, jitter=0.1):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + jitter * np.eye(d)


def _fid_sqrtm(mu1, sigma1, mu2, sigma2):
    """The pytorch-fid / TTUR recipe: sqrtm of the (non-symmetric) product, real part kept."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        offset = 1e-6 * np.eye(sigma1.shape[0])
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


# --------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 50
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert isinstance(got, float)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_frechet_matches_sqrtm_on_random_spd():
    rng = np.random.default_rng(1)
    d = 64
    mu1, mu2 = rng.normal(size=d), 0.3 * rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), 2.0 * _random_spd(rng, d)
    np.testing.assert_allclose(
        frechet_distance(mu1, s1, mu2, s2), _fid_sqrtm(mu1, s1, mu2, s2), rtol=1e-8
    )


def test_frechet_symmetric_and_zero_for_identical():
    rng = np.random.default_rng(2)
    d = 32
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    np.testing.assert_allclose(
        frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1), rtol=1e-12
    )
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-10 * np.trace(s1)


def test_frechet_rank_deficient():
    # 100 samples in 256 dimensions: both covariances have rank 99.
    rng = np.random.default_rng(3)
    n, d = 100, 256
    x = rng.normal(size=(n, d))
    y = 1.2 * rng.normal(size=(n, d)) + 0.1
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(got)
    # Exact reference from the data: with S_i = X_i^T X_i / (n - 1) (centered X_i [n, d]),
    # tr (S1 S2)^{1/2} is the nuclear norm of X1 X2^T / (n - 1), a small well-conditioned matrix.
    xc, yc = x - mu1, y - mu2
    tr_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / (n - 1)
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    np.testing.assert_allclose(got, exact, rtol=1e-12)
    # sqrtm of the singular product is only accurate to about sqrt(eps).
    np.testing.assert_allclose(got, _fid_sqrtm(mu1, s1, mu2, s2), rtol=1e-6)


def test_frechet_rotation_invariant():
    rng = np.random.default_rng(4)
    d = 40
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d, jitter=0.0)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    np.testing.assert_allclose(
        frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T),
        frechet_distance(mu1, s1, mu2, s2),
        rtol=1e-10,
    )


def test_frechet_dimension_mismatch():
    with pytest.raises(ValueError, match="dimension mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma must be"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))


# --------------------------------------------------------------------------------------------------
# FeatureStats
# --------------------------------------------------------------------------------------------------


def _stream(x, sizes, **kwargs):
    acc = FeatureStats(**kwargs)
    start = 0
    for size in sizes:
        acc.update(x[start : start + size])
        start += size
    assert start == x.shape[0]
    return acc


def test_feature_stats_uneven_batches_match_numpy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 16)) * rng.uniform(0.1, 5, size=16) + rng.normal(size=16)
    acc = _stream(x, [1, 7, 50, 3, 0, 139])
    assert acc.count == 200 and acc.dim == 16
    np.testing.assert_allclose(acc.mean, x.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(acc.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    assert acc.features is None


def test_feature_stats_merge_equals_single():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(150, 8)) + 3.0
    whole = FeatureStats().update(x)
    merged = _stream(x[:40], [13, 27]).merge(_stream(x[40:], [100, 10]))
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.cov, whole.cov, rtol=1e-10, atol=1e-13)
    assert merged.count == whole.count == 150
    # Merging into an empty accumulator, or an empty one into ours, changes nothing.
    np.testing.assert_allclose(FeatureStats().merge(whole).cov, whole.cov, rtol=1e-14)
    np.testing.assert_allclose(whole.merge(FeatureStats(8)).cov, np.cov(x, rowvar=False))


def test_feature_stats_stable_with_large_offset():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(500, 12))
    acc = _stream(x + 1e4, [1, 99, 250, 150])
    np.testing.assert_allclose(acc.mean, x.mean(0) + 1e4, rtol=1e-14)
    np.testing.assert_allclose(acc.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-11)


def test_feature_stats_mask_and_kept_features():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(30, 4))
    mask = np.arange(30) % 3 != 0
    a = FeatureStats(keep_features=12).update(x[:10], mask[:10]).update(x[10:], mask[10:])
    np.testing.assert_allclose(a.cov, np.cov(x[mask], rowvar=False), rtol=1e-12)
    assert a.features.dtype == np.float32
    np.testing.assert_array_equal(a.features, x[mask][:12].astype(np.float32))
    b = FeatureStats(keep_features=5).update(x[:3]).merge(FeatureStats(keep_features=0).update(x))
    assert b.features.shape == (3, 4)  # the other accumulator kept nothing
    c = FeatureStats(keep_features=5).update(x[:3]).merge(FeatureStats(keep_features=9).update(x))
    np.testing.assert_array_equal(c.features, np.concatenate([x[:3], x[:2]]).astype(np.float32))
    stats = a.to_stats()
    assert isinstance(stats, Stats) and stats.features.shape == (12, 4)
    with pytest.raises(ValueError, match="at least 2"):
        _ = FeatureStats().update(x[:1]).cov
    with pytest.raises(ValueError, match="d=5"):
        FeatureStats(4).update(np.zeros((2, 5)))


# --------------------------------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------------------------------


def _is_direct(logits, splits):
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(p)
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        py = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
    return np.mean(scores), np.std(scores), scores


def test_inception_score_uniform_is_one():
    mean, std = inception_score(probs=np.full((100, 10), 0.1), splits=10)
    np.testing.assert_allclose([mean, std], [1.0, 0.0], rtol=1e-12, atol=1e-12)
    mean, std = inception_score(np.zeros((64, 1008), np.float32), splits=4)
    np.testing.assert_allclose([mean, std], [1.0, 0.0], rtol=1e-12, atol=1e-12)


def test_inception_score_one_hot_even_classes_is_k():
    k, splits, per_class = 7, 5, 3
    labels = np.tile(np.arange(k), splits * per_class)  # every split holds each class 3 times
    mean, std = inception_score(probs=np.eye(k)[labels], splits=splits)
    np.testing.assert_allclose(mean, k, rtol=1e-12)
    assert std < 1e-12


def test_inception_score_matches_direct_formula_and_split_std():
    rng = np.random.default_rng(9)
    logits = (3.0 * rng.normal(size=(1003, 20))).astype(np.float32)  # n not divisible by splits
    mean, std = inception_score(logits, splits=10)
    ref_mean, ref_std, ref_scores = _is_direct(logits, 10)
    np.testing.assert_allclose([mean, std], [ref_mean, ref_std], rtol=1e-12)
    # The splits are consecutive, unshuffled parts; std is over their scores with ddof=0.
    n = len(logits)
    parts = [inception_score(logits[i * n // 10 : (i + 1) * n // 10], splits=1) for i in range(10)]
    scores = np.array([m for m, _ in parts])
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-12)
    np.testing.assert_allclose(std, scores.std(), rtol=1e-12)
    assert std > 0
    # From probabilities the result is the same.
    probs = np.exp(logits - scipy.special.logsumexp(logits.astype(np.float64), 1, keepdims=True))
    np.testing.assert_allclose(inception_score(probs=probs, splits=10), (mean, std), rtol=1e-10)


def test_is_accumulator_streams():
    rng = np.random.default_rng(10)
    logits = rng.normal(size=(90, 11)).astype(np.float32)
    acc = ISAccumulator().update(logits[:17]).merge(ISAccumulator().update(logits[17:]))
    assert acc.count == 90
    np.testing.assert_allclose(acc.result(splits=3), inception_score(logits, splits=3), rtol=1e-14)


def test_inception_score_bad_inputs():
    with pytest.raises(ValueError, match="exactly one"):
        inception_score()
    with pytest.raises(ValueError, match="summing to 1"):
        inception_score(probs=np.ones((4, 3)))
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.zeros((5, 3)), splits=10)


# --------------------------------------------------------------------------------------------------
# Kernel Inception Distance
# --------------------------------------------------------------------------------------------------


def test_kid_identical_distributions_near_zero():
    rng = np.random.default_rng(11)
    f1, f2 = rng.normal(size=(1500, 32)), rng.normal(size=(1500, 32))
    mean, std = kernel_inception_distance(f1, f2, num_subsets=30, subset_size=200, rng=0)
    assert std > 0
    assert abs(mean) < 3 * std


def test_kid_matches_direct_unbiased_mmd():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(30, 6)), rng.normal(size=(40, 6)) + 0.2

    def k(a, b, gamma, degree, coef0):
        return (gamma * np.dot(a, b) + coef0) ** degree

    for gamma, degree, coef0 in [(None, 3, 1.0), (0.5, 2, 0.3)]:
        g = 1.0 / 6 if gamma is None else gamma
        m, n = len(x), len(y)
        xx = sum(k(x[i], x[j], g, degree, coef0) for i, j in itertools.permutations(range(m), 2))
        yy = sum(k(y[i], y[j], g, degree, coef0) for i, j in itertools.permutations(range(n), 2))
        xy = sum(k(a, b, g, degree, coef0) for a in x for b in y)
        direct = xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2 * xy / (m * n)
        mean, std = kernel_inception_distance(
            x, y, num_subsets=1, subset_size=1000, degree=degree, gamma=gamma, coef0=coef0
        )
        np.testing.assert_allclose(mean, direct, rtol=1e-10)
        assert std == 0.0


def test_kid_detects_mean_shift_and_is_reproducible():
    rng = np.random.default_rng(13)
    f1, f2 = rng.normal(size=(600, 16)), rng.normal(size=(600, 16)) + 0.5
    mean, std = kernel_inception_distance(f1, f2, num_subsets=10, subset_size=100, rng=1)
    assert mean > 5 * std > 0
    null, _ = kernel_inception_distance(f1, f2 - 0.5, num_subsets=10, subset_size=100, rng=1)
    assert mean > 20 * abs(null)
    again = kernel_inception_distance(f1, f2, num_subsets=10, subset_size=100, rng=1)
    assert again == (mean, std)
    with pytest.raises(ValueError, match="dimension mismatch"):
        kernel_inception_distance(f1, f2[:, :8])


# --------------------------------------------------------------------------------------------------
# Reference statistics files
# --------------------------------------------------------------------------------------------------


def test_stats_round_trip(tmp_path):
    rng = np.random.default_rng(14)
    feats = rng.normal(size=(20, 5)).astype(np.float32)
    mu, sigma = feats.mean(0), np.cov(feats, rowvar=False)
    path = tmp_path / "ref_stats"  # no suffix: the file is written at exactly this path
    save_stats(path, mu, sigma, feats, dataset="toy", num_samples=20)
    assert path.exists()
    stats = load_stats(path)
    np.testing.assert_array_equal(stats.mu, mu.astype(np.float64))
    np.testing.assert_array_equal(stats.sigma, sigma)
    np.testing.assert_array_equal(stats.features, feats)
    assert load_stats_meta(path) == {"dataset": "toy", "num_samples": 20}
    save_stats(tmp_path / "plain.npz", mu, sigma)
    assert load_stats(tmp_path / "plain.npz").features is None
    assert load_stats_meta(tmp_path / "plain.npz") == {}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_load_pytorch_fid_format(tmp_path):
    mu, sigma = np.arange(3.0), np.diag([1.0, 2.0, 3.0])
    np.savez(tmp_path / "fid_stats.npz", mu=mu, sigma=sigma)
    stats = load_stats(tmp_path / "fid_stats.npz")
    np.testing.assert_array_equal(stats.mu, mu)
    np.testing.assert_array_equal(stats.sigma, sigma)
    assert stats.features is None


def test_load_score_sde_format(tmp_path):
    rng = np.random.default_rng(15)
    pool_3 = (rng.normal(size=(300, 24)) + 2.0).astype(np.float32)
    np.savez(tmp_path / "cifar10_stats.npz", pool_3=pool_3, logits=rng.normal(size=(300, 10)))
    stats = load_stats(tmp_path / "cifar10_stats.npz")
    x = pool_3.astype(np.float64)
    np.testing.assert_allclose(stats.mu, np.mean(x, 0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(stats.features, pool_3)


def test_load_unknown_or_inconsistent(tmp_path):
    np.savez(tmp_path / "odd.npz", activations=np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"keys found: \['activations'\].*pool_3"):
        load_stats(tmp_path / "odd.npz")
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(ValueError, match="sigma must be"):
        load_stats(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", mu=np.zeros(3), sigma=np.eye(3), features=np.zeros((5, 4)))
    with pytest.raises(ValueError, match="d=4"):
        load_stats(tmp_path / "bad2.npz")


# --------------------------------------------------------------------------------------------------
# Warnings and the report
# --------------------------------------------------------------------------------------------------


def test_fid_sample_warning():
    message = fid_sample_warning(10_000)
    assert message is not None and "10000" in message and "not comparable" in message
    assert fid_sample_warning(50_000) is None


def test_compute_metrics():
    rng = np.random.default_rng(16)
    gen = rng.normal(size=(400, 8))
    ref = rng.normal(size=(500, 8)) + 0.1
    gen_acc = FeatureStats(keep_features=300)
    for i in range(0, 400, 64):
        gen_acc.update(gen[i : i + 64])
    ref_stats = FeatureStats(keep_features=500).update(ref).to_stats()
    logits = ISAccumulator().update(rng.normal(size=(400, 10)))
    out = compute_metrics(gen_acc, ref_stats, logits=logits, kid_subsets=5, kid_subset_size=100)
    assert out["num_samples"] == 400
    np.testing.assert_allclose(
        out["fid"],
        frechet_distance(gen.mean(0), np.cov(gen, rowvar=False), ref_stats.mu, ref_stats.sigma),
        rtol=1e-10,
    )
    assert {"kid", "kid_std", "inception_score", "inception_score_std"} <= out.keys()
    assert out["inception_score"] == inception_score(logits.logits, splits=10)[0]
    assert any("FID" in w for w in out["warnings"])
    # Without raw features or logits only the FID is reported.
    out = compute_metrics(Stats(ref_stats.mu, ref_stats.sigma), ref_stats, num_samples=50_000)
    assert out["fid"] < 1e-10 and out["warnings"] == [] and out["num_samples"] == 50_000
    assert "kid" not in out and "inception_score" not in out
