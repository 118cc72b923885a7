"""Tests of scoresde_jax.core.score: the labels a network sees and how its output becomes a
score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sde_reference as ref
from scipy import stats

from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.score import get_score_fn, time_labels
from scoresde_jax.core.sde import get_sde

N = 1000
# Grid times t_i = i / (N - 1) (correctly rounded float32, so that floor((N - 1) t_i) = i) and a
# few times between grid points.
GRID_IDX = np.array([0, 1, 2, 17, 500, 998, 999])
TIMES = np.concatenate(
    [GRID_IDX.astype(np.float32) / np.float32(N - 1), np.array([1e-3, 0.2345, 0.77777], np.float32)]
)


def _times(name, continuous):
    # sigma_0 = 0 for VP and sub-VP, so t = 0 is outside the continuous models' domain.
    return TIMES if name == "vesde" or (name == "vpsde" and not continuous) else TIMES[TIMES > 0]


def _expected(name, continuous, t):
    """``(labels, scale)`` from the score table: ``score = scale * output``, in float64."""
    t32, t = t, t.astype(np.float64)
    alpha, sigma, _, _ = ref.coefficients(name, t)
    if name == "vesde":
        if continuous:
            return sigma, np.ones_like(t)
        return np.round((1.0 - t) * (N - 1)), np.ones_like(t)
    if name == "vpsde" and not continuous:
        # The float32 product, as the library forms it: on grid times the floor depends on it.
        labels = t32 * np.float32(N - 1)
        abar = ref.ddpm_alphas_cumprod(N)[np.floor(labels).astype(int)]
        return labels, -1.0 / np.sqrt(1.0 - abar)
    return 999.0 * t, -1.0 / sigma  # continuous VP / sub-VP, and sub-VP in every case


@pytest.mark.parametrize("name", ref.NAMES)
@pytest.mark.parametrize("continuous", [True, False])
def test_score_fn_follows_the_table(name, continuous):
    sde = get_sde(name)
    times = _times(name, continuous)
    seen = []

    def model_fn(x, labels):
        seen.append(labels)
        return 2.0 * x + 1.0

    x = jax.random.normal(jax.random.key(0), (times.size, 3, 2))
    score = get_score_fn(sde, model_fn, continuous=continuous)(x, jnp.asarray(times))
    want_labels, scale = _expected(name, continuous, times)

    (labels,) = seen
    assert labels.shape == (times.size,)
    np.testing.assert_allclose(labels, want_labels, rtol=1e-5)
    if name == "vesde" and not continuous:
        assert labels.dtype == jnp.int32  # an index into the NCSN noise levels
    np.testing.assert_allclose(time_labels(sde, jnp.asarray(times), continuous=continuous), labels)
    out = 2.0 * np.asarray(x, np.float64) + 1.0
    np.testing.assert_allclose(score, scale[:, None, None] * out, rtol=1e-4)


def test_discrete_labels_agree_with_the_discrete_losses():
    """A discrete network trained by smld_loss/ddpm_loss is conditioned on the same index."""
    t = jnp.asarray(GRID_IDX.astype(np.float32) / np.float32(N - 1))
    # VE: the label indexes the descending noise levels, label 0 being sigma_max.
    ve = get_sde("vesde")
    labels = time_labels(ve, t, continuous=False)
    np.testing.assert_allclose(
        jnp.flip(ve.discrete_sigmas)[labels], ve.marginal_coeffs(t)[1], rtol=1e-5
    )
    np.testing.assert_array_equal(labels, N - 1 - GRID_IDX)
    # VP: the label is DDPM's step index i, with x_i ~ N(sqrt(abar_i) x_0, (1 - abar_i) I).
    vp = get_sde("vpsde")
    np.testing.assert_array_equal(
        np.asarray(time_labels(vp, t, continuous=False)).astype(int), GRID_IDX
    )


# ----------------------------------------------------------------------------------------------
# With a network that outputs the exact noise prediction (or score), the score is exact.

MIXTURE = GaussianMixture(
    weights=np.array([0.6, 0.4]),
    means=np.array([[1.5, -0.5], [-2.0, 1.0]]),
    covs=np.array([[[0.3, 0.1], [0.1, 0.2]], [[0.5, 0.0], [0.0, 0.1]]]),
)


def _np_mixture_score(x, alpha, sigma):
    """``grad log p`` of the perturbed mixture from its responsibilities, in float64."""
    d = x.shape[-1]
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        covs = alpha[b] ** 2 * MIXTURE.covs + sigma[b] ** 2 * np.eye(d)
        means = alpha[b] * MIXTURE.means
        dens = np.array(
            [stats.multivariate_normal(m, c).pdf(x[b]) for m, c in zip(means, covs, strict=True)]
        )
        resp = MIXTURE.weights * dens / (MIXTURE.weights @ dens)
        grads = [-np.linalg.solve(c, x[b] - m) for m, c in zip(means, covs, strict=True)]
        out[b] = resp @ np.array(grads)
    return out


def test_mixture_score_is_exact():
    # The reference used below, checked once against an independent float64 computation.
    t = np.array([0.01, 0.2, 0.6], np.float32)
    x = jax.random.normal(jax.random.key(1), (3, 2)) * 2.0
    alpha, sigma, _, _ = ref.coefficients("vpsde", t.astype(np.float64))
    got = MIXTURE.score_fn(get_sde("vpsde"))(x, jnp.asarray(t))
    np.testing.assert_allclose(
        got, _np_mixture_score(np.asarray(x, np.float64), alpha, sigma), rtol=1e-3, atol=1e-4
    )


def _exact_network(name, continuous):
    """The ideal network for MIXTURE: the score (VE) or the noise prediction ``-sigma s*`` (VP)."""
    sde = get_sde(name)
    if name == "vesde":
        if continuous:
            return lambda x, labels: MIXTURE.score(x, 1.0, labels)
        sig_desc = jnp.flip(sde.discrete_sigmas)
        return lambda x, labels: MIXTURE.score(x, 1.0, sig_desc[labels])
    if name == "vpsde" and not continuous:

        def ddpm_network(x, labels):
            i = labels.astype(jnp.int32)
            a, s = sde.sqrt_alphas_cumprod[i], sde.sqrt_1m_alphas_cumprod[i]
            return -s[:, None] * MIXTURE.score(x, a, s)

        return ddpm_network

    def noise_network(x, labels):
        alpha, sigma = sde.marginal_coeffs(labels / 999.0)
        return -sigma[:, None] * MIXTURE.score(x, alpha, sigma)

    return noise_network


@pytest.mark.parametrize("name", ref.NAMES)
@pytest.mark.parametrize("continuous", [True, False])
def test_exact_network_gives_exact_score(name, continuous):
    sde = get_sde(name)
    # Discrete VE and VP networks know only the grid's noise levels: test them on the grid, and
    # discrete VP against DDPM's marginal N(sqrt(abar_i) x_0, (1 - abar_i) I) there.
    on_grid = name != "subvpsde" and not continuous
    t = jnp.asarray(TIMES[: GRID_IDX.size] if on_grid else _times(name, continuous))
    x = 3.0 * jax.random.normal(jax.random.key(2), (t.shape[0], 2))
    score = jax.jit(get_score_fn(sde, _exact_network(name, continuous), continuous=continuous))(
        x, t
    )
    if name == "vpsde" and not continuous:
        abar = ref.ddpm_alphas_cumprod(N)[GRID_IDX]
        want = MIXTURE.score(x, jnp.sqrt(abar), jnp.sqrt(1.0 - abar))
    else:
        want = MIXTURE.score_fn(sde)(x, t)
    np.testing.assert_allclose(score, want, rtol=2e-3, atol=1e-3 * float(jnp.abs(want).max()))


def test_unsupported_sde():
    class Other:
        pass

    with pytest.raises(TypeError):
        get_score_fn(Other(), lambda x, labels: x, continuous=True)
    with pytest.raises(TypeError):
        time_labels(Other(), jnp.zeros(2), continuous=True)
