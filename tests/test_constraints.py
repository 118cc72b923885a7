"""Inpainting and colorization (scoresde_jax.sampling.constraints) against closed-form Gaussian
laws, the mask builders, and the command-line tasks (scoresde_jax.modes.tasks) end to end on tiny
MNIST models.

Ground truth. The data are ``N(mu, Sigma)`` with the exact score
``-(a_t^2 Sigma + s_t^2 I)^{-1} (x - a_t mu)``. Two laws are known in closed form:

* the Bayesian posterior ``p(x_u | x_k = y)`` (a Schur complement);
* the exact law of the replacement sampler itself when it runs predictor steps only: every step
  is linear in the state and in the freshly drawn known part, so the mean and covariance of the
  unknown part can be propagated step by step (:func:`replacement_law`).

The sampler must reproduce the second within sampling error; where known and unknown parts are
correlated the two laws differ by many standard errors (the method's approximation, see the
docstring of scoresde_jax.sampling.constraints), and where they are independent they coincide,
which
checks the predictor-corrector path as well. Tolerances are ``Z`` standard errors of the sample
mean and covariance at ``N`` samples.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.sde import get_sde
from scoresde_jax.sampling import constraints

SDE_NAMES = ("vesde", "vpsde", "subvpsde")
N = 4000  # samples per run
Z = 5.0
STEPS = 60


def gaussian_score_fn(sde, mu, sigma):
    """Exact score of ``p_t = N(a_t mu, a_t^2 Sigma + s_t^2 I)`` through Sigma's eigenbasis."""
    lam, vecs = np.linalg.eigh(sigma)
    lam, vecs, mu = (jnp.asarray(a, jnp.float32) for a in (lam, vecs, mu))

    def score_fn(x, t):
        a, s = sde.marginal_coeffs(t)
        shape = x.shape
        x = x.reshape(shape[0], -1)
        z = (x - a[:, None] * mu[None]) @ vecs
        z = z / (a[:, None] ** 2 * lam[None] + s[:, None] ** 2)
        return -(z @ vecs.T).reshape(shape)

    return score_fn


def correlated_gaussian(dim: int, seed: int, scale: float = 0.5):
    """A random ``N(mu, Sigma)`` with strong correlations and marginal variances ``scale``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T / dim + 0.1 * np.eye(dim)
    d = np.sqrt(np.diag(cov))
    return rng.normal(size=dim), scale * cov / np.outer(d, d)


def posterior(mu, sigma, known, y):
    """Mean and covariance of ``p(x_u | x_k = y_k)`` for ``N(mu, Sigma)``."""
    k, u = np.flatnonzero(known), np.flatnonzero(~known)
    gain = sigma[np.ix_(u, k)] @ np.linalg.inv(sigma[np.ix_(k, k)])
    return mu[u] + gain @ (y[k] - mu[k]), sigma[np.ix_(u, u)] - gain @ sigma[np.ix_(k, u)]


def step_coefficients(sde, times):
    """``(a_t, s_t, c, G^2)`` at ``times`` with ``f = c x``, from the SDE's own functions.

    Evaluated on a fixed length (padded) so that eager JAX compiles each operation once.
    """
    n = len(times)
    padded = jnp.asarray(np.pad(times, (0, 1024 - n), mode="edge"), jnp.float32)
    a, s = sde.marginal_coeffs(padded)
    f, g = sde.discretize(jnp.ones((1024, 1)), padded)
    out = (a, s, f[:, 0], g**2)
    return tuple(np.asarray(v, np.float64)[:n] for v in out)


def replacement_law(sde, mu, sigma, known, y, *, num_steps, eps=1e-3, perturb_known_init=False):
    """Exact mean and covariance of the unknown part after ``inpaint`` with the
    ``reverse_diffusion`` predictor, no corrector and ``denoise=True``.

    Step ``i`` at ``t``: ``x_u <- (1 - c) x_u + G^2 s_u + G z`` with ``f = c x`` and ``G`` from
    the SDE's discretization, and ``s_u = -P_uu (x_u - a mu_u) - P_uk (x_k - a mu_k)``,
    ``P = (a^2 Sigma + s^2 I)^{-1}``. The known part ``x_k ~ N(m_k, v I)`` is independent of
    ``x_u``: ``y`` at the start (or ``N(a_T y, s_T^2 I)`` with ``perturb_known_init``), then a
    fresh draw at the time the step lands on (the next grid time, 0 after the last step).
    """
    sde = dataclasses.replace(sde, N=num_steps)
    k, u = np.flatnonzero(known), np.flatnonzero(~known)
    times = np.linspace(sde.T, eps, num_steps)
    landing = np.append(times[1:], 0.0)
    a_t, s_t, c_t, g2_t = step_coefficients(sde, times)
    a_l, s_l, _, _ = step_coefficients(sde, landing)

    m, cov = np.zeros(len(u)), sde.prior_std**2 * np.eye(len(u))
    if perturb_known_init:
        m_k, v = a_t[0] * y[k], s_t[0] ** 2  # times[0] = T
    else:
        m_k, v = y[k], 0.0
    eye = np.eye(len(u))
    for i in range(num_steps):
        a, s, c, g2 = a_t[i], s_t[i], c_t[i], g2_t[i]
        p = np.linalg.inv(a * a * sigma + s * s * np.eye(len(mu)))
        p_uu, p_uk = p[np.ix_(u, u)], p[np.ix_(u, k)]
        lin = (1 - c) * eye - g2 * p_uu
        m = lin @ m + g2 * (p_uu @ (a * mu[u]) - p_uk @ (m_k - a * mu[k]))
        fresh = 0.0 if i == num_steps - 1 else g2  # the last step returns its noise-free mean
        cov = lin @ cov @ lin.T + g2**2 * v * p_uk @ p_uk.T + fresh * eye
        m_k, v = a_l[i] * y[k], s_l[i] ** 2
    return m, cov


def z_scores(x, mean, cov):
    """Largest |z| of the sample mean and of the sample covariance entries."""
    x = np.asarray(x, np.float64)
    n = len(x)
    z_mean = (x.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    se_cov = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    z_cov = (np.cov(x.T) - cov) / se_cov
    return float(np.abs(z_mean).max()), float(np.abs(z_cov).max())


# An 8-dimensional correlated Gaussian, the first 4 coordinates known.
MU, SIGMA = correlated_gaussian(8, seed=0)
KNOWN = np.arange(8) < 4
Y = MU + np.linalg.cholesky(SIGMA) @ np.random.default_rng(1).normal(size=8)


def run_inpaint(sde, mu, sigma, known, y, key=0, **kwargs):
    data = jnp.broadcast_to(jnp.asarray(y, jnp.float32), (N, len(y)))
    score_fn = gaussian_score_fn(sde, mu, sigma)
    mask = jnp.asarray(known, jnp.float32)
    fn = jax.jit(lambda k: constraints.inpaint(sde, score_fn, k, data, mask, **kwargs).x)
    return np.asarray(fn(jax.random.PRNGKey(key)), np.float64)


@functools.cache
def predictor_only_run(sde_name: str, perturb_known_init: bool) -> np.ndarray:
    """Samples of the correlated problem, ``reverse_diffusion`` steps only (shared by tests)."""
    return run_inpaint(
        get_sde(sde_name),
        MU,
        SIGMA,
        KNOWN,
        Y,
        corrector="none",
        num_steps=STEPS,
        perturb_known_init=perturb_known_init,
    )


def test_gaussian_score_matches_gmm_module():
    mixture = GaussianMixture(np.ones(1), MU[None], SIGMA[None])
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 8))
    t = jnp.linspace(0.01, 1.0, 5)
    for name in ("vesde", "subvpsde"):
        sde = get_sde(name)
        np.testing.assert_allclose(
            gaussian_score_fn(sde, MU, SIGMA)(x, t),
            jax.jit(mixture.score_fn(sde))(x, t),
            rtol=2e-3,
            atol=1e-4 / float(sde.prior_std),
        )


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_inpaint_reproduces_the_exact_law_of_the_replacement_sampler(sde_name):
    x = predictor_only_run(sde_name, False)
    np.testing.assert_array_equal(x[:, KNOWN], np.broadcast_to(np.float32(Y[KNOWN]), (N, 4)))
    mean, cov = replacement_law(get_sde(sde_name), MU, SIGMA, KNOWN, Y, num_steps=STEPS)
    z_mean, z_cov = z_scores(x[:, ~KNOWN], mean, cov)
    assert z_mean < Z and z_cov < Z, (z_mean, z_cov)
    # With correlated parts this law is not the posterior: the sampler's samples reject it.
    post_mean, post_cov = posterior(MU, SIGMA, KNOWN, Y)
    assert max(z_scores(x[:, ~KNOWN], post_mean, post_cov)) > 20


def test_replacement_bias_persists_as_the_step_count_grows():
    """Not a discretization error: the law of the replacement sampler converges (numbers in the
    docstring of scoresde_jax.sampling.constraints) to one off the posterior."""
    post_mean, post_cov = posterior(MU, SIGMA, KNOWN, Y)
    std = np.sqrt(np.diag(post_cov))
    for name in SDE_NAMES:
        laws = [
            replacement_law(get_sde(name), MU, SIGMA, KNOWN, Y, num_steps=n) for n in (500, 1000)
        ]
        (m1, _), (m2, c2) = laws
        assert np.abs(m2 - m1).max() < 0.02 * std.min()
        assert 0.3 < np.abs(m2 - post_mean).max() / std.max() < 1.0
        assert np.all(np.diag(c2) / np.diag(post_cov) > 1.15)


@pytest.mark.parametrize("sde_name", ["vesde", "vpsde"])
def test_perturbed_known_init_gives_the_same_law(sde_name):
    """``perturb_known_init`` changes only what the first update sees. Its exact law differs
    from the default's by less than 1e-3 of a posterior std (VE: the means are identical, the
    first step only gets extra variance), and with the same key every sample moves by less than
    1 % of a posterior std."""
    sde = get_sde(sde_name)
    noisy = predictor_only_run(sde_name, True)
    mean, cov = replacement_law(sde, MU, SIGMA, KNOWN, Y, num_steps=STEPS, perturb_known_init=True)
    z_mean, z_cov = z_scores(noisy[:, ~KNOWN], mean, cov)
    assert z_mean < Z and z_cov < Z, (z_mean, z_cov)
    mean0, cov0 = replacement_law(sde, MU, SIGMA, KNOWN, Y, num_steps=STEPS)
    std = np.sqrt(np.diag(posterior(MU, SIGMA, KNOWN, Y)[1]))
    assert np.abs(mean - mean0).max() < 1e-3 * std.min()
    assert np.abs(np.diag(cov) / np.diag(cov0) - 1).max() < 1e-3
    clean = predictor_only_run(sde_name, False)
    assert 0 < np.abs(noisy - clean).max() < 0.01 * std.min()


def test_first_score_evaluation_sees_clean_or_perturbed_known_part():
    """VE: by default the first score evaluation sees the clean observation next to prior noise
    of std sigma_max; with ``perturb_known_init`` the known part has that std too."""
    sde = get_sde("vesde")
    seen = []

    def recording_score(x, t):
        jax.debug.callback(lambda x, t: seen.append((np.asarray(x), float(t[0]))), x, t)
        return gaussian_score_fn(sde, MU, SIGMA)(x, t)

    data = jnp.broadcast_to(jnp.asarray(Y, jnp.float32), (N, 8))
    for perturb in (False, True):
        seen.clear()
        constraints.inpaint(
            sde,
            recording_score,
            jax.random.PRNGKey(0),
            data,
            jnp.asarray(KNOWN, jnp.float32),
            corrector="none",
            num_steps=2,
            perturb_known_init=perturb,
        )
        first, t = seen[0]
        assert t == pytest.approx(sde.T)
        known_part = first[:, KNOWN]
        if perturb:  # a draw of p_0T(x_T | y) = N(y, sigma_max^2 I)
            np.testing.assert_allclose(known_part.mean(0), Y[KNOWN], atol=5 * 50 / N**0.5)
            np.testing.assert_allclose(known_part.std(0), 50.0, rtol=0.05)
        else:
            np.testing.assert_array_equal(known_part, np.broadcast_to(np.float32(Y[KNOWN]), (N, 4)))
        np.testing.assert_allclose(first[:, ~KNOWN].std(0), 50.0, rtol=0.05)


# Independent known and unknown parts: replacement is exact, with or without the corrector.
SIGMA_BLOCK = SIGMA * (KNOWN[:, None] == KNOWN[None, :])


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_inpaint_pc_matches_the_posterior_when_the_parts_are_independent(sde_name):
    sde = get_sde(sde_name)
    x = run_inpaint(sde, MU, SIGMA_BLOCK, KNOWN, Y, corrector="langevin", snr=0.16, num_steps=STEPS)
    np.testing.assert_array_equal(x[:, KNOWN], np.broadcast_to(np.float32(Y[KNOWN]), (N, 4)))
    post_mean, post_cov = posterior(MU, SIGMA_BLOCK, KNOWN, Y)
    z_mean, z_cov = z_scores(x[:, ~KNOWN], post_mean, post_cov)
    assert z_mean < Z and z_cov < Z, (z_mean, z_cov)


# ---------------------------------------------------------------------------------------------
# Colorization: a 2x2 RGB "image" (12 dimensions), gray level = channel mean.


def own_color_basis():
    """An orthonormal basis whose first vector is (1, 1, 1)/sqrt(3), built independently of the
    library's: any completion gives the same law because the sampler is rotation-equivariant."""
    q, _ = np.linalg.qr(np.array([[1.0, 1.0, 1.0], [0.3, -1.0, 0.2], [1.0, 0.5, -2.0]]).T)
    return (q * np.sign(q[0, 0])).T  # rows


def colorization_laws(mu, sigma, gray, num_steps, sde):
    """(replacement law, posterior) of the colors given the per-pixel gray levels, as means and
    covariances of the 12 RGB values; computed in the basis ``B = I_4 (x) M``."""
    b = np.kron(np.eye(4), own_color_basis())
    mu_y, sigma_y = b @ mu, b @ sigma @ b.T
    known = np.tile([True, False, False], 4)
    y = np.zeros(12)
    y[known] = np.sqrt(3.0) * gray
    out = []
    for m_u, c_u in (
        replacement_law(sde, mu_y, sigma_y, known, y, num_steps=num_steps),
        posterior(mu_y, sigma_y, known, y),
    ):
        mean_y = y.copy()
        mean_y[~known] = m_u
        cov_y = np.zeros((12, 12))
        cov_y[np.ix_(~known, ~known)] = c_u
        out.append((b.T @ mean_y, b.T @ cov_y @ b))
    return out


def colorization_gaussian(independent: bool):
    mu, sigma = correlated_gaussian(12, seed=2, scale=0.3)
    if independent:  # gray levels independent of the colors: block-diagonal in the basis
        b = np.kron(np.eye(4), own_color_basis())
        gray_axes = np.tile([True, False, False], 4)
        sigma_y = b @ sigma @ b.T
        sigma = b.T @ (sigma_y * (gray_axes[:, None] == gray_axes[None, :])) @ b
    x = mu + np.linalg.cholesky(sigma) @ np.random.default_rng(3).normal(size=12)
    return mu, sigma, x.reshape(2, 2, 3).mean(-1).ravel()


def run_colorize(sde, mu, sigma, gray, **kwargs):
    score = gaussian_score_fn(sde, mu, sigma)
    g = jnp.broadcast_to(jnp.asarray(gray.reshape(2, 2, 1), jnp.float32), (N, 2, 2, 1))
    fn = jax.jit(lambda k: constraints.colorize(sde, score, k, g, **kwargs).x)
    x = np.asarray(fn(jax.random.PRNGKey(5)), np.float64)
    assert x.shape == (N, 2, 2, 3)
    np.testing.assert_allclose(
        x.mean(-1), np.broadcast_to(gray.reshape(2, 2), (N, 2, 2)), atol=2e-5
    )
    return x.reshape(N, 12)


def restricted_z(x, mean, cov):
    """z-scores in the 8 color directions (the covariance is singular along the gray ones)."""
    b = np.kron(np.eye(4), own_color_basis())
    free = ~np.tile([True, False, False], 4)
    proj = b[free]
    return z_scores(x @ proj.T, proj @ mean, proj @ cov @ proj.T)


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_colorize_reproduces_the_exact_law_of_the_replacement_sampler(sde_name):
    sde = get_sde(sde_name)
    mu, sigma, gray = colorization_gaussian(independent=False)
    x = run_colorize(sde, mu, sigma, gray, corrector="none", num_steps=STEPS)
    (m, c), (pm, pc) = colorization_laws(mu, sigma, gray, STEPS, sde)
    z_mean, z_cov = restricted_z(x, m, c)
    assert z_mean < Z and z_cov < Z, (z_mean, z_cov)
    assert max(restricted_z(x, pm, pc)) > 10  # correlated gray and color: not the posterior


def test_colorize_pc_matches_the_posterior_when_gray_and_color_are_independent():
    sde = get_sde("vesde")
    mu, sigma, gray = colorization_gaussian(independent=True)
    x = run_colorize(sde, mu, sigma, gray, corrector="langevin", snr=0.16, num_steps=STEPS)
    _, (pm, pc) = colorization_laws(mu, sigma, gray, STEPS, sde)
    z_mean, z_cov = restricted_z(x, pm, pc)
    assert z_mean < Z and z_cov < Z, (z_mean, z_cov)


def test_colorize_takes_rgb_or_gray_input_and_rejects_a_one_channel_model():
    import flax.linen as nn

    sde = get_sde("vesde")  # (VP's DDPM discretization needs more than 3 steps)
    mu, sigma, gray = colorization_gaussian(independent=False)
    score = gaussian_score_fn(sde, mu, sigma)
    g1 = jnp.asarray(gray.reshape(1, 2, 2, 1), jnp.float32)
    rgb = jnp.concatenate([g1 - 0.2, g1 + 0.5, g1 - 0.3], axis=-1)  # channel mean = gray
    key = jax.random.PRNGKey(0)
    # RGB inputs are reduced to their channel mean: a repeated gray image and a colored one
    # with the same mean give colorizations with that gray level.
    both = jnp.concatenate([jnp.repeat(g1, 3, axis=-1), rgb])
    a = constraints.colorize(sde, score, key, both, num_steps=3).x
    assert a.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(a.mean(-1), jnp.concatenate([g1, g1])[..., 0], atol=1e-5)

    conv = nn.Conv(1, (3, 3))
    params = conv.init(key, jnp.zeros((1, 2, 2, 1)))
    gray_model = lambda x, t: conv.apply(params, x)  # a model of one-channel images
    with pytest.raises(ValueError, match="3-channel"):
        constraints.colorize(sde, gray_model, key, g1, num_steps=5)
    with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
        constraints.colorize(sde, score, key, jnp.zeros((1, 2, 2, 2)), num_steps=5)


def test_color_transform_is_orthogonal_with_gray_first():
    m = constraints.COLOR_TRANSFORM
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(m[0], np.ones(3) / np.sqrt(3))
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    y = constraints.to_color_space(x)
    np.testing.assert_allclose(y[..., :1] / np.sqrt(3), constraints.to_gray(x), atol=1e-6)
    np.testing.assert_allclose(constraints.from_color_space(y), x, atol=1e-6)


def test_inpaint_nfe_counts_score_evaluations_under_jit_and_checks_arguments():
    from mixture_scores import counting

    sde = get_sde("vesde")
    score, calls = counting(gaussian_score_fn(sde, MU, SIGMA))
    data = jnp.broadcast_to(jnp.asarray(Y, jnp.float32), (4, 8))
    mask = jnp.asarray(KNOWN, jnp.float32)
    nfe = []

    @jax.jit
    def run(key, data):
        res = constraints.inpaint(sde, score, key, data, mask, n_steps=2, num_steps=3)
        nfe.append(res.nfe)
        return res.x

    x = jax.block_until_ready(run(jax.random.PRNGKey(0), data))
    assert nfe == [3 * (1 + 2)] and len(calls) == 9
    np.testing.assert_array_equal(x[:, KNOWN], data[:, KNOWN])
    with pytest.raises(ValueError, match="does not broadcast"):
        constraints.inpaint(sde, score, jax.random.PRNGKey(0), data, jnp.ones(3), num_steps=2)
    with pytest.raises(ValueError, match="Unknown corrector"):
        constraints.inpaint(sde, score, jax.random.PRNGKey(0), data, mask, corrector="x")


# ---------------------------------------------------------------------------------------------
# Masks.


def test_builtin_masks():
    shape = (28, 28, 3)
    left = constraints.make_mask("left_half", shape)
    assert left.shape == (28, 28, 1) and left.dtype == np.float32
    assert set(np.unique(left)) == {0.0, 1.0}
    assert left[:, :14].max() == 0 and left[:, 14:].min() == 1
    right = constraints.make_mask("right_half", shape)
    np.testing.assert_array_equal(left + right, 1.0)
    top = constraints.make_mask("top_half", (10, 6))
    assert top[:5].max() == 0 and top[5:].min() == 1
    bottom = constraints.make_mask("bottom_half", (10, 6))
    np.testing.assert_array_equal(top + bottom, 1.0)

    box = constraints.make_mask("center_square", shape)[..., 0]
    assert (box == 0).sum() == 14 * 14 and box[7:21, 7:21].max() == 0
    assert (constraints.make_mask("center_square:0.25", shape) == 0).sum() == 7 * 7

    rand = constraints.make_mask("random_pixels:0.7", (100, 100), jax.random.PRNGKey(1))
    missing = 1 - rand.mean()
    assert abs(missing - 0.7) < 5 * np.sqrt(0.7 * 0.3 / 10_000)
    np.testing.assert_array_equal(
        rand, constraints.make_mask("random_pixels:0.7", (100, 100), jax.random.PRNGKey(1))
    )
    assert not np.array_equal(
        rand, constraints.make_mask("random_pixels:0.7", (100, 100), jax.random.PRNGKey(2))
    )

    stripes = constraints.make_mask("stripes:4", (16, 5))[:, 0, 0]
    np.testing.assert_array_equal(stripes, np.repeat([1, 0, 1, 0], 4))

    with pytest.raises(ValueError, match="center_square"):
        constraints.make_mask("circle", shape)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        constraints.make_mask("random_pixels:1.5", shape)
    with pytest.raises(ValueError, match="not a number"):
        constraints.make_mask("center_square:big", shape)


def test_mask_png_loader(tmp_path):
    known = np.zeros((8, 8), np.uint8)
    known[:, :3] = 255  # white = known
    path = tmp_path / "mask.png"
    Image.fromarray(known).save(path)
    mask = constraints.load_mask_png(path, 8)
    assert mask.shape == (8, 8, 1) and mask.dtype == np.float32
    np.testing.assert_array_equal(mask[..., 0], known / 255)
    # Nearest-neighbour resizing keeps the mask binary and its layout.
    big = constraints.load_mask_png(path, 32)
    assert set(np.unique(big)) <= {0.0, 1.0}
    np.testing.assert_array_equal(big[::4, ::4, 0], known / 255)
    np.testing.assert_array_equal(constraints.resolve_mask(str(path), 8), mask)
    np.testing.assert_array_equal(
        constraints.resolve_mask("left_half", 8), constraints.make_mask("left_half", (8, 8))
    )

    Image.fromarray(np.zeros((8, 6), np.uint8)).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match="square"):
        constraints.load_mask_png(tmp_path / "wide.png", 8)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        constraints.load_mask_png(tmp_path / "bad.png", 8)
    with pytest.raises(FileNotFoundError):
        constraints.load_mask_png(tmp_path / "missing.png", 8)


# ---------------------------------------------------------------------------------------------
# The command line, end to end on tiny networks.

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SCORESDE_SHARED", ROOT.parent / "shared"))
MNIST = SHARED / "data" / "mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason=f"MNIST IDX files not found in {MNIST} (set SCORESDE_SHARED)",
)


def tiny_config(get_config, **overrides):
    from train_utils import override

    config = get_config()
    m = config.model
    m.nf = 8
    m.ch_mult = (1,)
    m.num_res_blocks = 1
    m.attn_resolutions = ()
    m.dropout = 0.0
    t = config.training
    t.batch_size = 8
    t.n_iters = 1
    t.snapshot_freq = 1
    t.snapshot_freq_for_preemption = 1
    t.snapshot_sampling = False
    t.eval_freq = 100
    t.progress_bar = False
    config.optim.warmup = 1
    config.data.path = str(MNIST)
    s = config.sampling
    s.num_steps = 3
    s.num_inputs = 3
    s.num_completions = 2
    return override(config, overrides)


def grid_shape(rows, cols, h=28, w=28, pad=2):
    return (rows * (h + pad) + pad, cols * (w + pad) + pad)


@needs_mnist
@pytest.mark.slow
def test_cli_inpaint_on_mnist(tmp_path):
    from configs.mnist.ddpmpp_vp import get_config
    from scoresde_jax.cli import SAMPLE_TASKS, sample
    from scoresde_jax.run import trainer as train_lib

    workdir = tmp_path / "run"
    train_lib.train(tiny_config(get_config), str(workdir))

    # Colorization of one-channel data fails before anything is restored.
    with pytest.raises(ValueError, match="3-channel"):
        sample(tiny_config(get_config, **{"sampling.task": "colorize"}), str(workdir))
    with pytest.raises(ValueError, match="colorize"):
        sample(tiny_config(get_config, **{"sampling.task": "paint"}), str(workdir))
    assert sorted(SAMPLE_TASKS) == ["class", "colorize", "generate", "inpaint"]

    # Inputs from the test split, a built-in mask; 3 x 2 = 6 samples padded to the 8 devices.
    config = tiny_config(
        get_config, **{"sampling.task": "inpaint", "sampling.inpaint_mask": "right_half"}
    )
    report = sample(config, str(workdir))
    assert report["step"] == 1 and report["nfe"] == 3  # euler_maruyama, no corrector
    assert report["mse_known"] == 0.0 and report["mse_unknown"] > 0
    saved = np.load(report["npz"])
    originals, completions = saved["originals"], saved["completions"]
    assert originals.shape == (3, 28, 28, 1) and completions.shape == (3, 2, 28, 28, 1)
    assert completions.dtype == np.uint8
    from scoresde_jax.data import read_idx

    test_images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[:3]
    np.testing.assert_array_equal(originals[..., 0], test_images)
    np.testing.assert_array_equal(
        completions[:, :, :, :14], np.repeat(originals[:, None], 2, 1)[:, :, :, :14]
    )
    assert not np.array_equal(completions[:, 0, :, 14:], completions[:, 1, :, 14:])
    np.testing.assert_array_equal(saved["inputs"][:, :, 14:], 128)
    png = np.asarray(Image.open(report["png"]))
    assert png.shape[:2] == grid_shape(3, 4)

    # Inputs from an .npz of another size (resized) and a PNG mask (white = known).
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 36, 36), np.uint8)
    np.savez(tmp_path / "inputs.npz", images=images)
    mask = np.full((56, 56), 255, np.uint8)
    mask[20:40, 10:50] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    config = tiny_config(
        get_config,
        **{
            "sampling.task": "inpaint",
            "sampling.task_inputs": str(tmp_path / "inputs.npz"),
            "sampling.inpaint_mask": str(tmp_path / "mask.png"),
            "sampling.num_completions": 3,
            "sampling.perturb_known_init": True,
        },
    )
    report = sample(config, str(workdir))
    saved = np.load(report["npz"])
    known = saved["mask"][..., 0].astype(bool)
    assert known.shape == (28, 28) and (~known).sum() == 10 * 20
    originals, completions = saved["originals"], saved["completions"]
    assert originals.shape == (2, 28, 28, 1) and completions.shape == (2, 3, 28, 28, 1)
    np.testing.assert_array_equal(
        completions[:, :, known], np.repeat(originals[:, None], 3, 1)[:, :, known]
    )
    assert report["mse_known"] == 0.0 and report["perturb_known_init"]
    assert np.asarray(Image.open(report["png"])).shape[:2] == grid_shape(2, 5)

    with pytest.raises(FileNotFoundError, match="task_inputs"):
        sample(
            tiny_config(
                get_config,
                **{"sampling.task": "inpaint", "sampling.task_inputs": str(tmp_path / "x.npz")},
            ),
            str(workdir),
        )


@needs_mnist
@pytest.mark.slow
def test_cli_colorize_on_colored_mnist(tmp_path):
    from configs.mnist.ddpmpp_vp_colored import get_config
    from scoresde_jax.cli import sample
    from scoresde_jax.run.checkpoint import Checkpointer
    from scoresde_jax.run.experiment import build_experiment

    # The initial parameters, saved as a step-0 checkpoint: the task machinery is under test
    # here, and training (test_cli_inpaint_on_mnist) would only add compile time.
    workdir = tmp_path / "run"
    ckpt = Checkpointer(str(workdir), async_save=False)
    ckpt.save(build_experiment(tiny_config(get_config)).init_state())
    ckpt.wait()

    # Inputs: a folder of color and gray pictures of another size.
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (30, 30), np.uint8)).save(folder / "b.png")
    config = tiny_config(
        get_config,
        **{"sampling.task": "colorize", "sampling.task_inputs": str(folder)},
    )
    report = sample(config, str(workdir))
    assert report["gray_max_abs_error"] < 1e-5
    saved = np.load(report["npz"])
    originals, gray, completions = saved["originals"], saved["gray"], saved["completions"]
    assert originals.shape == (2, 28, 28, 3) and completions.shape == (2, 2, 28, 28, 3)
    assert gray.shape == (2, 28, 28, 1)
    # The gray picture of b.png is its own (repeated) gray level.
    np.testing.assert_array_equal(originals[1, ..., 0], originals[1, ..., 1])
    assert np.asarray(Image.open(report["png"])).shape[:2] == grid_shape(2, 4)
