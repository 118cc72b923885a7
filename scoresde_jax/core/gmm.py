"""Gaussian mixtures and their exact perturbed marginals, the ground truth of tests, benchmarks
and toy configs: if ``p_0 = sum_k w_k N(mu_k, C_k)`` and ``x_t | x_0 ~ N(alpha_t x_0, sigma_t^2
I)``, then ``p_t = sum_k w_k N(alpha_t mu_k, alpha_t^2 C_k + sigma_t^2 I)``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core.sde import SDE, ScoreFn


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """A mixture of ``K`` Gaussians in ``D`` dimensions: ``weights [K]`` (summing to one),
    ``means [K, D]``, ``covs [K, D, D]``."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    def __post_init__(self):
        w, m, c = (np.asarray(a, np.float64) for a in (self.weights, self.means, self.covs))
        if w.ndim != 1 or m.ndim != 2 or c.ndim != 3 or c.shape != (len(w), m.shape[1], m.shape[1]):
            raise ValueError(
                "GaussianMixture needs weights [K], means [K, D], covs [K, D, D]; got "
                f"{w.shape}, {m.shape}, {c.shape}"
            )
        if not np.isclose(w.sum(), 1.0) or (w < 0).any():
            raise ValueError(f"mixture weights must be non-negative and sum to 1, got {w}")
        for name, value in (("weights", w), ("means", m), ("covs", c)):
            object.__setattr__(self, name, value)

    @classmethod
    def isotropic(cls, weights, means, stds) -> GaussianMixture:
        """Components ``N(mu_k, std_k^2 I)``."""
        means = np.asarray(means, np.float64)
        stds = np.broadcast_to(np.asarray(stds, np.float64), (means.shape[0],))
        eye = np.eye(means.shape[1])
        return cls(np.asarray(weights, np.float64), means, stds[:, None, None] ** 2 * eye)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def mean(self) -> np.ndarray:
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        mu = self.mean()
        d = self.means - mu
        return np.einsum("k,kij->ij", self.weights, self.covs) + np.einsum(
            "k,ki,kj->ij", self.weights, d, d
        )

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """Draws ``n`` exact samples ``[n, D]``."""
        k1, k2 = jax.random.split(key)
        labels = jax.random.choice(k1, self.num_components, (n,), p=jnp.asarray(self.weights))
        chol = jnp.asarray(np.linalg.cholesky(self.covs), jnp.float32)
        z = jax.random.normal(k2, (n, self.dim))
        means = jnp.asarray(self.means, jnp.float32)
        return means[labels] + jnp.einsum("nij,nj->ni", chol[labels], z)

    def _component_logpdfs(self, x, alpha, sigma):
        """``[K]`` log N(x; alpha mu_k, alpha^2 C_k + sigma^2 I) for one point ``x: [D]``."""
        means = alpha * jnp.asarray(self.means, jnp.float32)
        covs = alpha**2 * jnp.asarray(self.covs, jnp.float32) + sigma**2 * jnp.eye(self.dim)[None]
        chol = jnp.linalg.cholesky(covs)
        diff = x[None, :] - means
        sol = jax.scipy.linalg.solve_triangular(chol, diff[..., None], lower=True)[..., 0]
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        return -0.5 * (jnp.sum(sol**2, -1) + logdet + self.dim * math.log(2 * math.pi))

    def _log_joint(self, x, alpha, sigma):
        """``[B, K]`` log ``w_k N(x; alpha mu_k, alpha^2 C_k + sigma^2 I)``."""
        b = x.shape[0]
        alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), (b,))
        sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))
        comp = jax.vmap(self._component_logpdfs)(x, alpha, sigma)
        return comp + jnp.log(jnp.asarray(self.weights, jnp.float32))[None]

    def logpdf(self, x: jax.Array, alpha=1.0, sigma=0.0) -> jax.Array:
        """Log-density ``[B]`` of the mixture perturbed to ``N(alpha x_0, sigma^2 I)`` (``alpha``,
        ``sigma`` scalars or ``[B]``)."""
        return jax.scipy.special.logsumexp(self._log_joint(x, alpha, sigma), axis=-1)

    def responsibilities(self, x: jax.Array, alpha=1.0, sigma=0.0) -> jax.Array:
        """Posterior component probabilities ``[B, K]``."""
        return jax.nn.softmax(self._log_joint(x, alpha, sigma), axis=-1)

    def marginal_logpdf(self, sde: SDE, x: jax.Array, t: jax.Array) -> jax.Array:
        """Exact ``log p_t(x)`` ``[B]`` under ``sde``; ``x: [B, D]``, ``t: [B]``."""
        alpha, sigma = sde.marginal_coeffs(t)
        return self.logpdf(x, alpha, sigma)

    def score(self, x: jax.Array, alpha=1.0, sigma=0.0) -> jax.Array:
        """Exact ``grad_x log p(x)`` ``[B, D]`` of the (perturbed) mixture."""
        return jax.grad(lambda y: jnp.sum(self.logpdf(y, alpha, sigma)))(x)

    def score_fn(self, sde: SDE) -> ScoreFn:
        """The exact score of ``p_t`` as a ``score_fn(x, t)`` for samplers and likelihoods."""

        def score_fn(x, t):
            alpha, sigma = sde.marginal_coeffs(t)
            return self.score(x, alpha, sigma)

        return score_fn
