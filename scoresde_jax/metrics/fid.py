"""FID, KID and the Inception Score from Inception features (host-side NumPy/SciPy, float64),
streaming feature statistics, and reference-statistics files: ours, the ``mu``/``sigma`` of
pytorch-fid and TTUR, and score_sde's ``*_stats.npz`` (raw ``pool_3``)."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from scoresde_jax.io.files import atomic_savez

# The sample count behind published FID / IS numbers (CIFAR-10 and most image benchmarks).
PUBLISHED_NUM_SAMPLES = 50_000


def _psd_factor(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V, s)`` with ``sigma = V diag(s)^2 V^T``, negative round-off eigenvalues clipped to 0."""
    w, v = np.linalg.eigh(sigma)
    return v, np.sqrt(np.clip(w, 0.0, None))


def _check_gaussian(mu: ArrayLike, sigma: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1:
        raise ValueError(f"{name}: mu must be a vector [d], got shape {mu.shape}")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(
            f"{name}: sigma must be [d, d] = [{d}, {d}] to match mu, got shape {sigma.shape}"
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"{name}: mu and sigma must be finite")
    # Accumulated covariances are symmetric only up to round-off, and eigh reads one triangle.
    return mu, 0.5 * (sigma + sigma.T)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Squared Fréchet distance ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})``
    of two Gaussians, float64, clipped at 0.

    The trace is the nuclear norm of ``diag(s1) V1^T V2 diag(s2)`` (``sigma_i = V_i diag(s_i)^2
    V_i^T``): unlike the ``sqrtm`` of pytorch-fid / TTUR (error ~ sqrt(eps) at the zero
    eigenvalues of singular covariances, hence their ``eps * I``) it errs by ``~ d eps ||A||`` and
    needs no special case for fewer samples than dimensions.
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "first Gaussian")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "second Gaussian")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"dimension mismatch: the first statistics have d={mu1.shape[0]}, "
            f"the second d={mu2.shape[0]}"
        )
    v1, s1 = _psd_factor(sigma1)
    v2, s2 = _psd_factor(sigma2)
    a = (s1[:, None] * (v1.T @ v2)) * s2[None, :]
    tr_sqrt = np.linalg.svd(a, compute_uv=False).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt
    return max(float(value), 0.0)


class Stats(NamedTuple):
    """``mu [d]``, ``sigma [d, d]`` and optionally raw ``features [n, d]`` (for KID)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None


def _masked_rows(x: ArrayLike, mask: ArrayLike | None, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what} must be [n, d], got shape {x.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (x.shape[0],):
            raise ValueError(f"mask must be [n] = [{x.shape[0]}], got shape {mask.shape}")
        x = x[mask]
    return x


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    """The rows of ``chunks`` as one array, which then replaces them."""
    if len(chunks) > 1:
        chunks[:] = [np.concatenate(chunks, axis=0)]
    return chunks[0]


class FeatureStats:
    """Streaming float64 mean and covariance of features (32 MiB for d = 2048), in place.

    Batches join by the pairwise update of Chan, Golub and LeVeque (1979), which keeps its
    precision when the features share a large offset (raw sums of ``x x^T`` do not).
    ``keep_features``: keep that many first raw rows for KID (float32; 50,000 x 2048: 400 MB).
    """

    def __init__(self, dim: int | None = None, *, keep_features: int | None = None):
        if keep_features is not None and keep_features < 0:
            raise ValueError(f"keep_features must be >= 0 or None, got {keep_features}")
        self._keep = keep_features
        self._count = 0
        self._kept: list[np.ndarray] = []
        self._init(dim)

    def _init(self, dim: int | None) -> None:
        self._dim = dim
        if dim is not None:
            self._mean = np.zeros(dim, np.float64)
            self._m2 = np.zeros((dim, dim), np.float64)

    def _combine(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self._count + n
        delta = mean - self._mean
        self._mean += delta * (n / total)
        self._m2 += m2
        self._m2 += np.outer(delta, delta * (self._count * n / total))
        self._count = total

    def _keep_rows(self, rows: np.ndarray) -> None:
        if self._keep is not None:
            take = min(self._keep - sum(len(k) for k in self._kept), rows.shape[0])
            if take > 0:
                self._kept.append(np.array(rows[:take], dtype=np.float32))

    def update(self, features: ArrayLike, mask: ArrayLike | None = None) -> FeatureStats:
        """Adds a batch ``features [n, d]``, skipping rows where ``mask [n]`` is False."""
        x = _masked_rows(features, mask, "features")
        if self._dim is None:
            self._init(x.shape[1])
        if x.shape[1] != self._dim:
            raise ValueError(f"features have d={x.shape[1]}, the accumulator d={self._dim}")
        n = x.shape[0]
        if n == 0:
            return self
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=0)
        xc = x64 - mean
        self._combine(n, mean, xc.T @ xc)
        self._keep_rows(x)
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Adds the samples accumulated by ``other``; the features it kept come after ours."""
        if other._count == 0:
            return self
        if self._dim is None:
            self._init(other._dim)
        if other._dim != self._dim:
            raise ValueError(f"cannot merge statistics of d={other._dim} into d={self._dim}")
        self._combine(other._count, other._mean, other._m2)
        for rows in other._kept:
            self._keep_rows(rows)
        return self

    @property
    def count(self) -> int:
        return self._count

    @property
    def dim(self) -> int | None:
        return self._dim

    @property
    def mean(self) -> np.ndarray:
        if self._count == 0:
            raise ValueError("no features accumulated yet")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance ``[d, d]`` (``n - 1``, like the ``np.cov`` of TTUR / pytorch-fid)."""
        if self._count < 2:
            raise ValueError(f"the covariance needs at least 2 samples, got {self._count}")
        cov = self._m2 / (self._count - 1)
        return 0.5 * (cov + cov.T)

    @property
    def features(self) -> np.ndarray | None:
        """The kept raw features (float32); ``None`` without ``keep_features``."""
        if self._keep is None:
            return None
        if not self._kept:
            return np.zeros((0, self._dim or 0), np.float32)
        return _joined(self._kept)

    def to_stats(self) -> Stats:
        return Stats(self.mean, self.cov, self.features)


def _log_probs(logits: ArrayLike | None, probs: ArrayLike | None) -> np.ndarray:
    if (logits is None) == (probs is None):
        raise ValueError("give exactly one of logits and probs")
    if logits is not None:
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2:
            raise ValueError(f"logits must be [n, classes], got shape {z.shape}")
        if not np.all(np.isfinite(z)):
            raise ValueError("logits must be finite")
        return z - special.logsumexp(z, axis=1, keepdims=True)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be [n, classes], got shape {p.shape}")
    total = p.sum(axis=1, keepdims=True)
    if np.any(p < 0) or not np.allclose(total, 1.0, rtol=0, atol=1e-3):
        raise ValueError("probs must be non-negative rows summing to 1 (pass logits= for logits)")
    # Renormalize so that float32 rounding of the rows does not bias the score.
    with np.errstate(divide="ignore"):
        return np.log(p / total)


def inception_score(
    logits: ArrayLike | None = None, *, probs: ArrayLike | None = None, splits: int = 10
) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` of ``logits`` or ``probs [n, classes]``.

    ``(mean, population std)`` over ``splits`` consecutive parts with their own ``p(y)``, as the
    Improved-GAN and TTUR code; score_sde reports ``splits=1`` over 50,000 samples, most papers 10.
    """
    log_p = _log_probs(logits, probs)
    n = log_p.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"need 1 <= splits <= n, got splits={splits} and n={n}")
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]
        # log p(y) = log mean_x p(y|x), formed in log space so that it cannot underflow.
        log_py = special.logsumexp(part, axis=0) - np.log(part.shape[0])
        p = np.exp(part)
        with np.errstate(invalid="ignore"):
            # 0 log 0 = 0: classes a prediction gives no mass to contribute nothing.
            kl = np.where(p > 0, p * (part - log_py), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    scores = np.asarray(scores)
    return float(scores.mean()), float(scores.std())


class ISAccumulator:
    """Collects logits for :func:`inception_score`: ``p(y)`` is per split, so every logit is kept
    (float32: 50,000 x 1008 take about 200 MB)."""

    def __init__(self):
        self._chunks: list[np.ndarray] = []

    def update(self, logits: ArrayLike, mask: ArrayLike | None = None) -> ISAccumulator:
        """Adds a batch of logits ``[n, classes]``, skipping rows where ``mask`` is False."""
        z = _masked_rows(logits, mask, "logits")
        if self._chunks and z.shape[1] != self._chunks[0].shape[1]:
            raise ValueError(
                f"logits have {z.shape[1]} classes, earlier batches {self._chunks[0].shape[1]}"
            )
        if z.shape[0]:
            self._chunks.append(np.array(z, dtype=np.float32))
        return self

    def merge(self, other: ISAccumulator) -> ISAccumulator:
        for chunk in other._chunks:
            self.update(chunk)
        return self

    @property
    def count(self) -> int:
        return sum(len(c) for c in self._chunks)

    @property
    def logits(self) -> np.ndarray:
        """All logits ``[n, classes]`` (float32) in the order they were added."""
        if not self._chunks:
            raise ValueError("no logits collected yet")
        return _joined(self._chunks)

    def result(self, splits: int = 10) -> tuple[float, float]:
        return inception_score(self.logits, splits=splits)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    def kernel(a, b):
        return (gamma * (a @ b.T) + coef0) ** degree

    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    # Drop the diagonal k(x_i, x_i): it is what makes the plain V-statistic biased.
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.sum() / (m * n))


def kernel_inception_distance(
    f1: ArrayLike,
    f2: ArrayLike,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    rng: np.random.Generator | int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al., 2018): ``(mean, population std)`` of the
    unbiased MMD^2 with kernel ``(gamma x.y + coef0)^degree`` (``gamma = 1 / d`` by default) over
    ``num_subsets`` draws of ``min(subset_size, n_i)`` rows without replacement; can be negative.
    About 600 GFLOP with the defaults at d = 2048.
    """
    f1, f2 = np.asarray(f1), np.asarray(f2)
    if f1.ndim != 2 or f2.ndim != 2:
        raise ValueError(f"features must be [n, d], got shapes {f1.shape} and {f2.shape}")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"dimension mismatch: d={f1.shape[1]} and d={f2.shape[1]}")
    if min(f1.shape[0], f2.shape[0]) < 2:
        raise ValueError(f"KID needs at least 2 rows per set, got {f1.shape[0]} and {f2.shape[0]}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(
            f"need num_subsets >= 1, subset_size >= 2, got {num_subsets}, {subset_size}"
        )
    d = f1.shape[1]
    gamma = 1.0 / d if gamma is None else float(gamma)
    rng = np.random.default_rng(rng)
    m, n = min(subset_size, f1.shape[0]), min(subset_size, f2.shape[0])
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        x = f1[rng.choice(f1.shape[0], m, replace=False)].astype(np.float64)
        y = f2[rng.choice(f2.shape[0], n, replace=False)].astype(np.float64)
        mmds[i] = _mmd2_unbiased(x, y, degree, gamma, coef0)
    return float(mmds.mean()), float(mmds.std())


_FORMATS = (
    "ours / pytorch-fid / TTUR: 'mu' [d] and 'sigma' [d, d] (optionally 'features' [n, d]); "
    "score_sde *_stats.npz: 'pool_3' [n, d] raw features (optionally 'logits')"
)


def save_stats(
    path: str | os.PathLike,
    mu: ArrayLike,
    sigma: ArrayLike,
    features: ArrayLike | None = None,
    **meta: Any,
) -> None:
    """Writes ``mu``, ``sigma`` (pytorch-fid's keys), optional ``features`` and ``meta`` (as JSON)
    atomically to an ``.npz`` at exactly ``path``."""
    mu, sigma = _check_gaussian(mu, sigma, os.fspath(path))
    arrays = {"mu": mu, "sigma": sigma}
    if features is not None:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != mu.shape[0]:
            raise ValueError(f"features must be [n, {mu.shape[0]}], got shape {features.shape}")
        arrays["features"] = features
    if meta:
        arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    atomic_savez(path, **arrays)


def load_stats(path: str | os.PathLike) -> Stats:
    """Reads reference statistics in a layout of ``_FORMATS``; raw ``pool_3`` features give
    ``mu`` and the unbiased ``sigma`` and are kept for KID."""
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as data:
        keys = sorted(data.files)
        feats = next((data[k] for k in ("features", "pool_3") if k in data.files), None)
        if feats is not None and (feats.ndim != 2 or feats.shape[0] < 1):
            raise ValueError(f"{path}: features must be [n, d], got shape {feats.shape}")
        if "mu" in data.files and "sigma" in data.files:
            mu, sigma = _check_gaussian(data["mu"], data["sigma"], path)
        elif feats is not None and "mu" not in data.files and "sigma" not in data.files:
            if feats.shape[0] < 2:
                raise ValueError(f"{path}: need at least 2 feature rows to estimate a covariance")
            # In chunks: a 50,000 x 2048 float32 array is never copied to float64 at once.
            acc = FeatureStats(feats.shape[1])
            for start in range(0, feats.shape[0], 8192):
                acc.update(feats[start : start + 8192])
            mu, sigma = acc.mean, acc.cov
        else:
            raise ValueError(
                f"{path}: unknown statistics layout; keys found: {keys}; accepted: {_FORMATS}"
            )
    if feats is not None and feats.shape[1] != mu.shape[0]:
        raise ValueError(
            f"{path}: features have d={feats.shape[1]} but mu/sigma have d={mu.shape[0]}"
        )
    return Stats(mu, sigma, feats)


def load_stats_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata :func:`save_stats` stored with the statistics (empty if none)."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        return json.loads(str(data["meta"])) if "meta" in data.files else {}


def fid_sample_warning(num_samples: int) -> str | None:
    """A warning when ``num_samples`` is below the 50,000 behind published FIDs, else ``None``."""
    if num_samples >= PUBLISHED_NUM_SAMPLES:
        return None
    return (
        f"FID computed from {num_samples} samples is not comparable to published numbers, "
        f"which use {PUBLISHED_NUM_SAMPLES}: FID is biased upward when fewer samples are used."
    )


def _as_stats(stats: Stats | FeatureStats | None) -> tuple[Stats | None, int | None]:
    if stats is None:
        return None, None
    if isinstance(stats, FeatureStats):
        return stats.to_stats(), stats.count
    if isinstance(stats, Stats):
        # The features kept in a Stats may be a capped subset, so they do not give the count.
        return stats, None
    raise TypeError(f"expected Stats or FeatureStats, got {type(stats).__name__}")


def compute_metrics(
    gen_stats: Stats | FeatureStats | None,
    ref_stats: Stats | FeatureStats | None,
    *,
    logits: ArrayLike | ISAccumulator | None = None,
    num_samples: int | None = None,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    rng: np.random.Generator | int = 0,
) -> dict[str, Any]:
    """``fid``, ``kid``/``kid_std`` (raw features in both), ``inception_score``/``_std`` (logits),
    as the inputs allow, plus ``num_samples`` (given, else a ``FeatureStats``'s count, else the
    rows of ``logits``; never a ``Stats``'s maybe capped features) and ``warnings``."""
    gen, gen_count = _as_stats(gen_stats)
    ref, _ = _as_stats(ref_stats)
    if isinstance(logits, ISAccumulator):
        logits = logits.logits if logits.count else None
    if num_samples is None:
        num_samples = gen_count
    if num_samples is None and logits is not None:
        num_samples = int(np.shape(logits)[0])

    out: dict[str, Any] = {}
    warnings: list[str] = []
    if gen is not None and ref is not None:
        out["fid"] = frechet_distance(gen.mu, gen.sigma, ref.mu, ref.sigma)
        if num_samples is None:
            warnings.append("the number of generated samples behind the FID is unknown")
        elif (message := fid_sample_warning(num_samples)) is not None:
            warnings.append(message)
        if gen.features is not None and ref.features is not None:
            n1, n2 = len(gen.features), len(ref.features)
            if min(n1, n2) < kid_subset_size:
                warnings.append(
                    f"KID subsets capped at {min(n1, n2, kid_subset_size)} rows ({n1} generated, "
                    f"{n2} reference features available; {kid_subset_size} asked)"
                )
            kid = dict(num_subsets=kid_subsets, subset_size=kid_subset_size, rng=rng)
            out["kid"], out["kid_std"] = kernel_inception_distance(
                gen.features, ref.features, **kid
            )
    if logits is not None:
        out["inception_score"], out["inception_score_std"] = inception_score(
            logits, splits=is_splits
        )
        n_logits = int(np.shape(logits)[0])
        if n_logits < PUBLISHED_NUM_SAMPLES:
            warnings.append(
                f"Inception Score computed from {n_logits} samples is not comparable to "
                f"published numbers, which use {PUBLISHED_NUM_SAMPLES}."
            )
    return {**out, "num_samples": num_samples, "warnings": warnings}
