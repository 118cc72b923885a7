"""Test helpers: the closed-form score of an isotropic Gaussian mixture, and score-call counting.

``p_t = sum_k w_k N(a_t mu_k, (a_t^2 s_k^2 + sig_t^2) I)``, so
``score = sum_k r_k (a_t mu_k - x) / (a_t^2 s_k^2 + sig_t^2)`` with ``r`` the responsibilities.
Same values as ``GaussianMixture.score_fn(sde)`` (checked in tests/test_sampling.py) but without
its per-example Cholesky factorizations and autodiff, which makes sampler runs ~4x faster.
"""

import jax
import jax.numpy as jnp


def isotropic_score_fn(sde, weights, means, stds):
    """Closed-form score of ``sum_k w_k N(a_t mu_k, (a_t^2 s_k^2 + sig_t^2) I)``."""
    log_w = jnp.log(jnp.asarray(weights, jnp.float32))
    means = jnp.asarray(means, jnp.float32)
    var0 = jnp.asarray(stds, jnp.float32) ** 2

    def score_fn(x, t):
        a, sig = sde.marginal_coeffs(t)
        var = a[:, None] ** 2 * var0[None, :] + sig[:, None] ** 2  # [B, K]
        diff = a[:, None, None] * means[None] - x[:, None, :]  # [B, K, D]
        logits = (
            log_w[None] - 0.5 * jnp.sum(diff**2, axis=-1) / var - 0.5 * x.shape[1] * jnp.log(var)
        )
        resp = jax.nn.softmax(logits, axis=-1)
        return jnp.sum((resp / var)[:, :, None] * diff, axis=1)

    return score_fn


def counting(score_fn):
    """Wraps ``score_fn`` so that every evaluation that actually runs is counted on the host."""
    calls = []

    def wrapped(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return score_fn(x, t)

    return wrapped, calls
