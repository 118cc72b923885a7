"""Sample-quality metrics from Inception features: FID, KID and the Inception Score.

Everything here is host-side NumPy/SciPy in float64. The features themselves (pool_3 activations,
2048 per image, and the classifier logits) come from the Inception network elsewhere; this module
only turns them into numbers:

- :func:`frechet_distance` between two Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (FID
  when these are the feature statistics of generated and reference images);
- :class:`FeatureStats`, streaming mean and covariance so that 50,000 x 2048 features never sit in
  memory at once (optionally keeping some raw features for KID);
- :func:`inception_score` and the streaming :class:`ISAccumulator`;
- :func:`kernel_inception_distance`, the unbiased polynomial-kernel MMD^2 of Binkowski et al. 2018;
- :func:`save_stats` / :func:`load_stats` for reference statistics in our ``.npz`` layout, the
  ``mu``/``sigma`` layout of pytorch-fid and TTUR, and score_sde's ``*_stats.npz`` (raw ``pool_3``);
- :func:`compute_metrics`, which combines whichever of these the inputs allow.

Published numbers use 50,000 generated samples; fewer give an FID that is biased upward and not
comparable (:func:`fid_sample_warning`).
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from scoresde_jax.io.files import atomic_savez

__all__ = [
    "PUBLISHED_NUM_SAMPLES",
    "FeatureStats",
    "ISAccumulator",
    "Stats",
    "compute_metrics",
    "fid_sample_warning",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_stats",
    "load_stats_meta",
    "save_stats",
]

# The sample count behind published FID / IS numbers (CIFAR-10 and most image benchmarks).
PUBLISHED_NUM_SAMPLES = 50_000


# --------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------


def _psd_factor(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V, s)`` with ``sigma = V diag(s)^2 V^T`` for a symmetric PSD ``sigma`` (``s >= 0``).

    Round-off can make the smallest eigenvalues of a (near-)singular covariance slightly negative;
    they are clipped to zero, which is the nearest PSD matrix in the Frobenius norm.
    """
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
    # Symmetrize: covariances accumulated in floating point are symmetric only up to round-off,
    # and eigh reads one triangle only.
    return mu, 0.5 * (sigma + sigma.T)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet (2-Wasserstein) distance squared between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``d^2 = ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})``, computed in float64.

    The trace of the matrix square root is computed without forming ``(sigma1 sigma2)^{1/2}``:
    the eigenvalues of ``sigma1 sigma2`` equal those of the symmetric PSD matrix
    ``sigma1^{1/2} sigma2 sigma1^{1/2} = A A^T`` with ``A = sigma1^{1/2} sigma2^{1/2}``, i.e. the
    squared singular values of ``A``, so ``tr (sigma1 sigma2)^{1/2} = ||A||_*`` (the nuclear norm).
    With ``sigma_i = V_i diag(s_i)^2 V_i^T`` (one symmetric eigendecomposition each, tiny negative
    eigenvalues clipped), ``||A||_* = ||diag(s1) V1^T V2 diag(s2)||_*`` by orthogonal invariance.

    Why not ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` as in pytorch-fid / TTUR: the product is not
    symmetric, so its square root is computed by a Schur method that returns complex values with
    spurious imaginary parts and loses accuracy (error ~ sqrt(eps)) at the zero eigenvalues of
    singular covariances -- the usual case when fewer samples than 2048 dimensions are used -- which
    is why those implementations need an ``eps * I`` offset and an imaginary-part check. Here every
    decomposition is of a symmetric matrix or a singular-value one, the errors in the trace are of
    order ``d * eps * ||A||``, and rank-deficient covariances need no special case.

    Args:
      mu1: mean of the first Gaussian, ``[d]``.
      sigma1: covariance of the first Gaussian, ``[d, d]``, symmetric positive semi-definite.
      mu2: mean of the second Gaussian, ``[d]``.
      sigma2: covariance of the second Gaussian, ``[d, d]``.

    Returns:
      The squared distance as a Python float (clipped at zero: the true value is non-negative and
      only round-off can make the computed one negative).

    Raises:
      ValueError: on inconsistent shapes, differing dimensions or non-finite inputs.
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


# --------------------------------------------------------------------------------------------------
# Streaming statistics
# --------------------------------------------------------------------------------------------------


class Stats(NamedTuple):
    """Gaussian statistics of a feature set: ``mu [d]``, ``sigma [d, d]``, optional raw
    ``features [n, d]`` (used for KID)."""

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


class FeatureStats:
    """Streaming mean and covariance of feature vectors, in float64.

    Each batch is reduced to its count, mean and centered sum of outer products
    ``M2 = sum (x - mean)(x - mean)^T`` and combined with the running totals by the pairwise update
    of Chan, Golub and LeVeque (1979). Unlike accumulating raw sums of ``x x^T``, this does not lose
    precision when the features share a large common offset (``E[x x^T] - mu mu^T`` cancels
    catastrophically). Memory is ``O(d^2)`` (32 MiB for d = 2048) whatever the number of samples.

    ``update`` and ``merge`` modify the accumulator in place and return it, so per-host or per-shard
    accumulators can be combined at the end.

    Args:
      dim: feature dimension; taken from the first batch when ``None``.
      keep_features: also keep up to this many raw feature vectors (the first ones seen, as float32:
        50,000 x 2048 take 400 MB) for the kernel inception distance; ``None`` keeps none.
    """

    def __init__(self, dim: int | None = None, *, keep_features: int | None = None):
        if keep_features is not None and keep_features < 0:
            raise ValueError(f"keep_features must be >= 0 or None, got {keep_features}")
        self._dim = dim
        self._keep = keep_features
        self._count = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._kept: list[np.ndarray] = []
        self._num_kept = 0
        if dim is not None:
            self._init(dim)

    def _init(self, dim: int) -> None:
        self._dim = dim
        self._mean = np.zeros(dim, np.float64)
        self._m2 = np.zeros((dim, dim), np.float64)

    def _combine(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if n == 0:
            return
        total = self._count + n
        delta = mean - self._mean
        self._mean += delta * (n / total)
        self._m2 += m2
        self._m2 += np.outer(delta, delta * (self._count * n / total))
        self._count = total

    def _keep_rows(self, rows: np.ndarray) -> None:
        if self._keep is None:
            return
        take = min(self._keep - self._num_kept, rows.shape[0])
        if take > 0:
            self._kept.append(np.array(rows[:take], dtype=np.float32))
            self._num_kept += take

    def update(self, features: ArrayLike, mask: ArrayLike | None = None) -> FeatureStats:
        """Adds a batch ``features [n, d]``; rows where ``mask [n]`` is False (padding) are
        skipped."""
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
        """Number of feature vectors seen."""
        return self._count

    @property
    def dim(self) -> int | None:
        """Feature dimension (``None`` before the first batch when not given)."""
        return self._dim

    @property
    def mean(self) -> np.ndarray:
        """Mean feature vector ``[d]`` (float64)."""
        if self._count == 0:
            raise ValueError("no features accumulated yet")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance ``[d, d]`` (divides by ``n - 1``, like ``np.cov`` as used by TTUR
        and pytorch-fid)."""
        if self._count < 2:
            raise ValueError(f"the covariance needs at least 2 samples, got {self._count}")
        cov = self._m2 / (self._count - 1)
        return 0.5 * (cov + cov.T)

    @property
    def features(self) -> np.ndarray | None:
        """The kept raw features ``[min(n, keep_features), d]`` (float32), or ``None`` when the
        accumulator keeps none."""
        if self._keep is None:
            return None
        if not self._kept:
            return np.zeros((0, self._dim or 0), np.float32)
        if len(self._kept) > 1:
            self._kept = [np.concatenate(self._kept, axis=0)]
        return self._kept[0]

    def to_stats(self) -> Stats:
        """``Stats(mean, cov, kept features or None)``."""
        return Stats(self.mean, self.cov, self.features)


# --------------------------------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------------------------------


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
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))``, mean and standard deviation over splits.

    As in the Improved-GAN and TTUR code, the ``n`` predictions are cut, in order and without
    shuffling, into ``splits`` consecutive parts (``[i n // splits, (i + 1) n // splits)``); each
    part gets its own marginal ``p(y)`` and score, and the result is the mean and the population
    standard deviation (``ddof=0``) of those scores. score_sde reports a single split
    (``splits=1``) over 50,000 samples; most papers use ten.

    Args:
      logits: classifier logits ``[n, classes]``; converted with a float64 log-softmax.
      probs: or class probabilities ``[n, classes]`` (rows summing to 1; zeros allowed).
      splits: number of parts; ``n >= splits`` is required.

    Returns:
      ``(mean, std)`` of the per-split scores, as Python floats.
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
    """Collects classifier logits batch by batch for :func:`inception_score`.

    The score's marginal ``p(y)`` is taken per split, so the per-example predictions are kept:
    the logits, as float32 (50,000 x 1008 classes take about 200 MB), turned into log-probabilities
    in float64 only when the score is computed.
    """

    def __init__(self):
        self._chunks: list[np.ndarray] = []
        self._count = 0

    def update(self, logits: ArrayLike, mask: ArrayLike | None = None) -> ISAccumulator:
        """Adds a batch of logits ``[n, classes]``; rows where ``mask`` is False are skipped."""
        z = _masked_rows(logits, mask, "logits")
        if self._chunks and z.shape[1] != self._chunks[0].shape[1]:
            raise ValueError(
                f"logits have {z.shape[1]} classes, earlier batches {self._chunks[0].shape[1]}"
            )
        if z.shape[0]:
            self._chunks.append(np.array(z, dtype=np.float32))
            self._count += z.shape[0]
        return self

    def merge(self, other: ISAccumulator) -> ISAccumulator:
        """Appends the logits collected by ``other`` after ours."""
        for chunk in other._chunks:
            self.update(chunk)
        return self

    @property
    def count(self) -> int:
        """Number of predictions collected."""
        return self._count

    @property
    def logits(self) -> np.ndarray:
        """All logits ``[n, classes]`` (float32) in the order they were added."""
        if not self._chunks:
            raise ValueError("no logits collected yet")
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks, axis=0)]
        return self._chunks[0]

    def result(self, splits: int = 10) -> tuple[float, float]:
        """``inception_score(self.logits, splits=splits)``."""
        return inception_score(self.logits, splits=splits)


# --------------------------------------------------------------------------------------------------
# Kernel Inception Distance
# --------------------------------------------------------------------------------------------------


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
    """Kernel Inception Distance (Binkowski et al., 2018): the unbiased estimator of the squared
    MMD with the polynomial kernel ``k(x, y) = (gamma x.y + coef0)^degree``, averaged over random
    subsets.

    Each of the ``num_subsets`` rounds draws ``min(subset_size, n1)`` rows of ``f1`` and
    ``min(subset_size, n2)`` rows of ``f2`` without replacement and computes

        sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
        - 2 sum_{i, j} k(x_i, y_j) / (m n)

    in float64. The estimate can be negative when the distributions are close. The cost is
    ``O(num_subsets * subset_size^2 * d)``: about 600 GFLOP with the defaults at d = 2048.

    Args:
      f1: features ``[n1, d]`` (e.g. of generated images).
      f2: features ``[n2, d]`` (e.g. of reference images).
      num_subsets: number of random subsets averaged.
      subset_size: rows per subset, capped at the rows available (at least 2 are needed).
      degree: kernel degree.
      gamma: kernel scale; ``1 / d`` when ``None``.
      coef0: kernel offset.
      rng: a NumPy ``Generator`` or a seed.

    Returns:
      ``(mean, std)`` over subsets (population standard deviation, as in the reference code).
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


# --------------------------------------------------------------------------------------------------
# Reference statistics files
# --------------------------------------------------------------------------------------------------

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
    """Writes reference statistics to an ``.npz`` file at exactly ``path``.

    Keys: ``mu``, ``sigma``, ``features`` when given, and ``meta`` (the keyword arguments as a JSON
    string, e.g. dataset name and sample count). ``mu``/``sigma`` are the keys pytorch-fid reads, so
    the file also works there. The file is written to a temporary name and renamed, so an
    interrupted write never leaves a truncated file behind.
    """
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


def _stats_from_features(features: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    # Streamed in chunks so that a 50,000 x 2048 float32 array is never copied to float64 at once.
    acc = FeatureStats(features.shape[1])
    for start in range(0, features.shape[0], chunk):
        acc.update(features[start : start + chunk])
    return acc.mean, acc.cov


def load_stats(path: str | os.PathLike) -> Stats:
    """Reads reference statistics: ``Stats(mu, sigma, features or None)``.

    Accepted layouts (``.npz``):

    - ours, pytorch-fid's and TTUR's: ``mu`` and ``sigma``, with optional ``features`` (ours; a
      ``pool_3`` array next to ``mu``/``sigma`` is taken as the features too);
    - score_sde's ``*_stats.npz``: ``pool_3``, the raw pool_3 features ``[n, 2048]`` (and possibly
      ``logits``, ignored); ``mu`` and the unbiased ``sigma`` are computed from them, and they are
      returned as ``features`` for KID.

    Raises:
      ValueError: for any other layout (the message lists the keys found and the layouts
        accepted) and for arrays whose shapes do not agree.
    """
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as data:
        keys = sorted(data.files)
        feats = None
        for name in ("features", "pool_3"):
            if name in data.files:
                feats = data[name]
                break
        if feats is not None and (feats.ndim != 2 or feats.shape[0] < 1):
            raise ValueError(f"{path}: features must be [n, d], got shape {feats.shape}")
        if "mu" in data.files and "sigma" in data.files:
            mu, sigma = _check_gaussian(data["mu"], data["sigma"], path)
        elif feats is not None and "mu" not in data.files and "sigma" not in data.files:
            if feats.shape[0] < 2:
                raise ValueError(f"{path}: need at least 2 feature rows to estimate a covariance")
            mu, sigma = _stats_from_features(feats)
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
        if "meta" not in data.files:
            return {}
        return json.loads(str(data["meta"]))


# --------------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------------


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
    gen_features: ArrayLike | None = None,
    ref_features: ArrayLike | None = None,
    logits: ArrayLike | ISAccumulator | None = None,
    num_samples: int | None = None,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    rng: np.random.Generator | int = 0,
) -> dict[str, Any]:
    """Every metric the inputs allow, as a flat dictionary.

    - ``fid``: when both ``gen_stats`` and ``ref_stats`` are given;
    - ``kid``, ``kid_std``: when raw features of both sides are available (``gen_features`` /
      ``ref_features``, else the features kept in the statistics);
    - ``inception_score``, ``inception_score_std``: when ``logits`` of the generated samples are
      given (an array or an :class:`ISAccumulator`), with ``is_splits`` splits;
    - ``num_samples``: the number of generated samples: ``num_samples`` if given, else the count
      of a :class:`FeatureStats` ``gen_stats``, else the rows of ``gen_features`` or ``logits``
      (not of the features kept in a :class:`Stats`, which may be a capped subset); ``None`` if
      unknown;
    - ``warnings``: a list of strings, e.g. from :func:`fid_sample_warning`.

    Keys whose inputs are missing are left out, so the values can go straight to a scalar logger.
    """
    gen, gen_count = _as_stats(gen_stats)
    ref, _ = _as_stats(ref_stats)
    if isinstance(logits, ISAccumulator):
        logits = logits.logits if logits.count else None
    if num_samples is None:
        num_samples = gen_count
    if num_samples is None and gen_features is not None:
        num_samples = int(np.shape(gen_features)[0])
    if num_samples is None and logits is not None:
        num_samples = int(np.shape(logits)[0])
    if gen_features is None and gen is not None:
        gen_features = gen.features
    if ref_features is None and ref is not None:
        ref_features = ref.features

    out: dict[str, Any] = {}
    warnings: list[str] = []
    if gen is not None and ref is not None:
        out["fid"] = frechet_distance(gen.mu, gen.sigma, ref.mu, ref.sigma)
        if num_samples is None:
            warnings.append("the number of generated samples behind the FID is unknown")
        elif (message := fid_sample_warning(num_samples)) is not None:
            warnings.append(message)
    if gen_features is not None and ref_features is not None:
        n1, n2 = np.shape(gen_features)[0], np.shape(ref_features)[0]
        if min(n1, n2) < kid_subset_size:
            warnings.append(
                f"KID subsets capped at {min(n1, n2, kid_subset_size)} rows "
                f"({n1} generated, {n2} reference features available; {kid_subset_size} asked)"
            )
        out["kid"], out["kid_std"] = kernel_inception_distance(
            gen_features,
            ref_features,
            num_subsets=kid_subsets,
            subset_size=kid_subset_size,
            rng=rng,
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
    out["num_samples"] = num_samples
    out["warnings"] = warnings
    return out
