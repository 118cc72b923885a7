"""EDM preconditioning and loss (scoresde_jax.core.precond) against Gaussian-mixture ground truth:
the exact denoiser of a mixture is ``E[y | y + sigma n = x] = x + sigma^2 grad log p_sigma(x)``
in closed form."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax.core import precond as pc
from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.sde import VESDE, get_sde
from scoresde_jax.sampling import edm_sample

MIX = GaussianMixture(
    np.array([0.3, 0.7]),
    np.array([[0.6, -0.3], [-0.4, 0.25]]),
    np.array([[[0.02, 0.005], [0.005, 0.03]], [[0.04, -0.01], [-0.01, 0.02]]]),
)
SIGMAS = np.array([0.002, 0.05, 0.5, 3.0, 80.0])


def exact_denoiser(x, sigma):
    sigma = jnp.broadcast_to(sigma, (x.shape[0],))
    return x + sigma[:, None] ** 2 * MIX.score(x, 1.0, sigma)


def exact_net(precond):
    """The raw network whose preconditioned denoiser is the exact one: ``F = (D* - c_skip x) /
    c_out`` at ``x = x_in / c_in`` and the ``sigma`` of ``c_noise``."""

    def net(x_in, c_noise):
        sigma = precond.noise_level_of_label(c_noise)
        c_skip, c_out, c_in, _ = precond.coefficients(sigma)
        x = x_in / c_in[:, None]
        return (exact_denoiser(x, sigma) - c_skip[:, None] * x) / c_out[:, None]

    return net


@pytest.mark.parametrize("kind", pc.KINDS)
def test_coefficients_are_table_1(kind):
    p = pc.Preconditioning(kind)
    s = SIGMAS.astype(np.float64)
    c_skip, c_out, c_in, c_noise = (np.asarray(c, np.float64) for c in p.coefficients(s))
    if kind == "vp":
        t = (np.sqrt(0.1**2 + 2 * 19.9 * np.log1p(s**2)) - 0.1) / 19.9
        np.testing.assert_allclose(np.sqrt(np.expm1(19.9 * t**2 / 2 + 0.1 * t)), s, rtol=1e-5)
        want = (np.ones_like(s), -s, 1 / np.sqrt(s**2 + 1), 999 * t)
    elif kind == "ve":
        want = (np.ones_like(s), s, np.ones_like(s), np.log(s / 2))
    else:
        total = s**2 + 0.25
        want = (0.25 / total, 0.5 * s / np.sqrt(total), 1 / np.sqrt(total), np.log(s) / 4)
    for got, expected in zip((c_skip, c_out, c_in, c_noise), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    # Sec. 5: lambda(sigma) c_out(sigma)^2 = 1 (every column); labels invert.
    np.testing.assert_allclose(np.asarray(p.loss_weight(s)) * c_out**2, 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p.noise_level_of_label(c_noise)), s, rtol=1e-4)


def test_edm_input_and_target_have_unit_variance():
    """EDM's c_in and c_out make the network's input and training target unit-variance for data
    of standard deviation sigma_data at every noise level (Karras et al. 2022, App. B.6)."""
    p = pc.Preconditioning("edm", sigma_data=0.5)
    y = 0.5 * jax.random.normal(jax.random.key(0), (200_000,))
    n = jax.random.normal(jax.random.key(1), (200_000,))
    for sigma in (0.01, 0.5, 10.0):
        c_skip, c_out, c_in, _ = p.coefficients(jnp.float32(sigma))
        x = y + sigma * n
        np.testing.assert_allclose(float(jnp.std(c_in * x)), 1.0, rtol=0.01)
        np.testing.assert_allclose(float(jnp.std((y - c_skip * x) / c_out)), 1.0, rtol=0.01)


@pytest.mark.parametrize("kind", pc.KINDS)
def test_wrapper_of_the_exact_net_is_the_exact_denoiser(kind):
    p = pc.Preconditioning(kind)
    denoise = pc.denoiser(p, exact_net(p))
    x = MIX.sample(jax.random.key(2), 8) + 0.3 * jax.random.normal(jax.random.key(3), (8, 2))
    for sigma in (0.05, 0.5, 3.0):
        sig = jnp.full((8,), sigma, jnp.float32)
        np.testing.assert_allclose(
            denoise(x, sig), exact_denoiser(x, sig), rtol=1e-3, atol=1e-3 * sigma
        )


@pytest.mark.parametrize("sde_name", ["vesde", "vpsde", "subvpsde"])
def test_score_of_the_exact_denoiser_is_the_marginal_score(sde_name):
    """``(s D(x / s; sigma) - x) / (s sigma)^2`` is the closed-form score of ``p_t`` of each SDE."""
    sde = get_sde(sde_name)
    score = pc.score_fn(sde, exact_denoiser)
    want = MIX.score_fn(sde)
    x = MIX.sample(jax.random.key(4), 6)
    for t in (0.01, 0.2, 0.7):
        tt = jnp.full((6,), t, jnp.float32)
        xt = sde.marginal_prob(x, tt)[0] + 0.2 * jax.random.normal(jax.random.key(5), x.shape)
        got, expected = score(xt, tt), want(xt, tt)
        np.testing.assert_allclose(
            got, expected, rtol=2e-3, atol=2e-3 * float(jnp.abs(expected).max())
        )


def test_edm_loss_is_minimised_by_the_exact_denoiser():
    """Perturbing the exact denoiser by ``c h`` changes the per-sample loss by ``2 c lambda (D* -
    y) h + c^2 lambda h^2`` exactly; the first term has mean zero exactly at the minimiser, so its
    Monte Carlo mean lies within sampling error of 0 and every perturbation raises the loss."""
    p, noise = pc.Preconditioning("edm"), pc.NoiseDistribution("edm")
    n = 40_000
    y = MIX.sample(jax.random.key(6), n)
    key = jax.random.key(7)

    def h(x, sigma):  # a smooth, sigma-dependent direction of the same scale as the error
        return jnp.tanh(3 * x[:, ::-1]) * (sigma / jnp.sqrt(sigma**2 + 0.25))[:, None] * 0.5

    def loss(c):
        fn = lambda x, sigma: exact_denoiser(x, sigma) + c * h(x, sigma)  # noqa: E731
        return np.asarray(pc.denoising_loss(p, noise, fn, y, key), np.float64)

    base = loss(0.0)
    se = lambda v: v.std(ddof=1) / math.sqrt(len(v))  # noqa: E731
    for c in (0.3, -0.3):
        diff = loss(c) - base  # the same sigma and noise draws: paired
        assert diff.mean() > 5 * se(diff) > 0
    # The cross term, from the exactly quadratic dependence on c:
    cross = (loss(0.3) - loss(-0.3)) / (4 * 0.3)
    assert abs(cross.mean()) < 3.5 * se(cross), (cross.mean(), se(cross))
    # A mis-scaled denoiser is worse too.
    worse = np.asarray(
        pc.denoising_loss(p, noise, lambda x, s: 0.9 * exact_denoiser(x, s), y, key), np.float64
    )
    assert (worse - base).mean() > 5 * se(worse - base)


def test_edm_sampling_with_the_exact_denoiser_reproduces_the_mixture():
    p = pc.Preconditioning("edm")
    sde = VESDE(sigma_min=0.002, sigma_max=80.0)
    score = pc.score_fn(sde, pc.denoiser(p, exact_net(p)))
    n = 4000
    res = jax.jit(lambda k: edm_sample(sde, score, k, (n, 2), num_steps=32))(jax.random.key(8))
    x = np.asarray(res.x, np.float64)
    assert np.isfinite(x).all()
    comp = np.asarray(jnp.argmax(MIX.responsibilities(res.x), axis=-1))
    freq = np.bincount(comp, minlength=2) / n
    se = np.sqrt(MIX.weights * (1 - MIX.weights) / n)
    np.testing.assert_array_less(np.abs(freq - MIX.weights), 4 * se + 0.01)
    np.testing.assert_allclose(x.mean(0), MIX.mean(), atol=0.03)
    np.testing.assert_allclose(np.cov(x.T), MIX.covariance(), atol=0.015)


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="preconditioning"):
        pc.Preconditioning("karras")
    with pytest.raises(ValueError, match="noise distribution"):
        pc.NoiseDistribution("lognormal")
