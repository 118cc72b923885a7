"""Latent manipulation and path helpers against closed forms (paper, Section 4.3).

Ground truth:

* a Gaussian mixture's exact score makes the probability flow map ``p_0`` onto ``p_T``, which
  is the prior up to terms far below the sampling error here; so encoding mixture samples must
  give latents with the prior's moments, and decoding must return the inputs to the solver's
  tolerance;
* for a single Gaussian ``N(m, v I)`` the flow is affine: the standardized coordinate
  ``(x_t - alpha_t m) / r_t`` with ``r_t^2 = alpha_t^2 v + sigma_t^2`` is constant along it, so
  decoding any latent, tempered or interpolated, and every state of an ODE path, is known
  exactly; the reverse SDE's marginal at every ``t`` is ``N(alpha_t m, r_t^2 I)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mixture_scores import isotropic_score_fn

from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.sde import get_sde
from scoresde_jax.sampling import decode, ode_sample, ode_trajectory, reverse_sde_trajectory
from scoresde_jax.sampling.latent import (
    interpolate,
    prior_moment_zscores,
    round_trip,
    slerp,
    temperature_sample,
)

SDE_NAMES = ("vesde", "vpsde", "subvpsde")
WEIGHTS = np.array([0.3, 0.5, 0.2])
MEANS = np.array([[-1.5, 0.0], [1.0, 1.0], [0.5, -1.5]])
STDS = np.array([0.3, 0.4, 0.25])
MIXTURE = GaussianMixture.isotropic(WEIGHTS, MEANS, STDS)
GAUSS_MEAN, GAUSS_STD = np.array([0.5, -1.0]), 0.5
GAUSSIAN = GaussianMixture.isotropic([1.0], GAUSS_MEAN[None], GAUSS_STD)
EPS = 1e-3
# z-scores below are checked against 4.5: for correct code a false alarm has probability ~1e-5
# per statistic, while the defects they catch (latents off the prior) are tens of sigmas.
Z = 4.5


def gaussian_score_fn(sde):
    """The exact score of the perturbed ``GAUSSIAN`` (cheaper than ``GAUSSIAN.score_fn``)."""
    return isotropic_score_fn(sde, [1.0], GAUSS_MEAN[None], [GAUSS_STD])


def _coeffs(sde, t: float) -> tuple[float, float]:
    a, s = sde.marginal_coeffs(jnp.full((1,), t, jnp.float32))
    return float(a[0]), float(s[0])


def gaussian_flow(sde, y: np.ndarray, t_from: float, t_to: float) -> np.ndarray:
    """The exact probability flow of ``N(m, v I)`` data from time ``t_from`` to ``t_to``."""
    (a0, s0), (a1, s1) = _coeffs(sde, t_from), _coeffs(sde, t_to)
    r0 = math.sqrt(a0**2 * GAUSS_STD**2 + s0**2)
    r1 = math.sqrt(a1**2 * GAUSS_STD**2 + s1**2)
    return a1 * GAUSS_MEAN + (r1 / r0) * (np.asarray(y, np.float64) - a0 * GAUSS_MEAN)


# ----------------------------------------------------------------------------------------- slerp


def test_slerp_endpoints_norm_and_constant_speed():
    key0, key1 = jax.random.split(jax.random.key(0))
    z0 = jax.random.normal(key0, (5, 3, 4))
    z1 = jax.random.normal(key1, (5, 3, 4))
    np.testing.assert_allclose(slerp(z0, z1, 0.0), z0, atol=1e-6)
    np.testing.assert_allclose(slerp(z0, z1, 1.0), z1, atol=1e-6)
    # Equal norms: every interpolant keeps the norm and the angle to z0 grows linearly.
    norms0 = jnp.linalg.norm(z0.reshape(5, -1), axis=-1)
    z1 = z1 * (norms0 / jnp.linalg.norm(z1.reshape(5, -1), axis=-1))[:, None, None]
    f0, f1 = np.asarray(z0.reshape(5, -1), np.float64), np.asarray(z1.reshape(5, -1), np.float64)
    omega = np.arccos(np.sum(f0 * f1, -1) / np.sum(f0 * f0, -1))
    for a in (0.1, 0.37, 0.5, 0.9):
        z = np.asarray(jax.jit(slerp)(z0, z1, a).reshape(5, -1), np.float64)
        np.testing.assert_allclose(np.linalg.norm(z, axis=-1), norms0, rtol=1e-5)
        angle = np.arccos(np.clip(np.sum(z * f0, -1) / np.sum(f0 * f0, -1), -1, 1))
        np.testing.assert_allclose(angle, a * omega, atol=1e-3)
    # Per-example weights.
    alpha = jnp.array([0.0, 1.0, 0.0, 1.0, 0.0])
    mixed = slerp(z0, z1, alpha)
    np.testing.assert_allclose(mixed[1], z1[1], atol=1e-6)
    np.testing.assert_allclose(mixed[2], z0[2], atol=1e-6)


def test_slerp_of_unequal_norms_interpolates_the_norm_linearly():
    # Nearly opposite directions (angle pi - 0.01) and norms 1 and 3: the norm goes 1 -> 3
    # linearly and the direction turns at constant speed (the classic formula would reach a
    # norm of ~100 half way).
    angle = math.pi - 0.01
    z0 = jnp.array([[1.0, 0.0]])
    z1 = 3.0 * jnp.array([[math.cos(angle), math.sin(angle)]])
    for a in (0.25, 0.5, 0.75):
        z = np.asarray(slerp(z0, z1, a), np.float64)[0]
        np.testing.assert_allclose(np.linalg.norm(z), 1 + 2 * a, rtol=1e-5)
        np.testing.assert_allclose(math.atan2(z[1], z[0]), a * angle, atol=1e-4)


def test_slerp_of_parallel_and_opposite_latents_is_linear_and_finite():
    z0 = jnp.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    z1 = jnp.array([[2.0, 4.0, 6.0 + 1e-6], [-1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    for a in (0.0, 0.25, 0.5, 1.0):
        out = slerp(z0, z1, a)
        np.testing.assert_allclose(out, (1 - a) * z0 + a * z1, atol=1e-5)
    grads = jax.grad(lambda z: jnp.sum(slerp(z, z1, 0.3) ** 2))(z0)
    assert np.all(np.isfinite(grads))
    with pytest.raises(ValueError, match="one shape"):
        slerp(z0, z1[:2], 0.5)


# -------------------------------------------------------------------- encoding with exact scores


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_round_trip_returns_input_and_latents_follow_the_prior(sde_name):
    sde = get_sde(sde_name)
    score_fn = MIXTURE.score_fn(sde)
    x = MIXTURE.sample(jax.random.key(1), 600)
    tol = 1e-5
    rt = jax.jit(lambda x: round_trip(sde, score_fn, x, eps=EPS, rtol=tol, atol=tol))(x)
    err = np.linalg.norm(np.asarray(rt.x_rec) - np.asarray(x), axis=-1)
    # Step sizes follow the RMS error of the whole batch: the bulk comes back within a few
    # tolerances, the few points on the flow's stretched boundaries between modes a little less
    # well (tests/test_sampling.py shows both shrink with the tolerance).
    assert np.median(err) < 10 * tol, np.median(err)
    assert np.max(err) < 1e-2, np.max(err)
    assert int(rt.nfe) > 20
    stats = jax.device_get(prior_moment_zscores(rt.z, sde.prior_std))
    for name in ("mean_max", "var_max", "sq_norm"):
        assert abs(float(stats[name])) < Z, (name, stats)
    z = np.asarray(rt.z, np.float64) / sde.prior_std
    corr = np.corrcoef(z.T)[0, 1]
    assert abs(corr) * math.sqrt(len(z)) < Z, corr
    # The data themselves are far from prior-like (a sanity check of the statistic): VP and
    # sub-VP priors have unit variance, its first coordinate has variance 1.3 and mean 0.15.
    if sde_name != "vesde":
        off = jax.device_get(prior_moment_zscores(x, sde.prior_std))
        assert max(abs(float(off[k])) for k in ("mean_max", "var_max", "sq_norm")) > Z


def test_prior_moment_zscores_accept_prior_samples_and_reject_scaled_ones():
    z = 3.0 * jax.random.normal(jax.random.key(2), (4000, 8))
    good = jax.device_get(prior_moment_zscores(z, 3.0))
    assert all(abs(float(good[k])) < Z for k in ("mean_max", "var_max", "sq_norm")), good
    expected = -0.5 * 8 * (math.log(2 * math.pi * 9.0) + 1)
    assert abs(float(good["prior_logp"]) - expected) < 0.15
    np.testing.assert_allclose(float(good["prior_logp_expected"]), expected, rtol=1e-6)
    bad = jax.device_get(prior_moment_zscores(1.1 * z, 3.0))
    assert float(bad["var_max"]) > 2 * Z and float(bad["sq_norm"]) > 2 * Z


# ----------------------------------------------------------------- interpolation and temperature


@pytest.mark.parametrize("sde_name", ["vesde", "vpsde"])
def test_interpolation_decodes_the_slerp_of_the_latents(sde_name):
    sde = get_sde(sde_name)
    score_fn = gaussian_score_fn(sde)
    x = GAUSSIAN.sample(jax.random.key(3), 8)
    x0, x1 = x[:4], x[4:]
    num = 6
    res = jax.jit(
        lambda a, b: interpolate(sde, score_fn, a, b, num, eps=EPS, rtol=1e-6, atol=1e-6)
    )(x0, x1)
    assert res.x.shape == (4, num, 2) and res.z.shape == (4, num, 2)
    np.testing.assert_allclose(res.alphas, np.linspace(0, 1, num), atol=1e-7)
    # The endpoints decode to the inputs, the latents are the exact images of the inputs and the
    # interpolants the exact images of the great circle between them.
    scale = sde.prior_std
    np.testing.assert_allclose(res.x[:, 0], x0, atol=1e-3)
    np.testing.assert_allclose(res.x[:, -1], x1, atol=1e-3)
    z0 = gaussian_flow(sde, x0, EPS, sde.T)
    z1 = gaussian_flow(sde, x1, EPS, sde.T)
    np.testing.assert_allclose(res.z[:, 0], z0, atol=1e-3 * scale)
    np.testing.assert_allclose(res.z[:, -1], z1, atol=1e-3 * scale)
    for k, a in enumerate(np.linspace(0, 1, num)):
        zk = np.asarray(slerp(jnp.asarray(z0, jnp.float32), jnp.asarray(z1, jnp.float32), a))
        np.testing.assert_allclose(res.z[:, k], zk, atol=2e-3 * scale)
        np.testing.assert_allclose(
            res.x[:, k], gaussian_flow(sde, res.z[:, k], sde.T, EPS), atol=1e-3
        )
    with pytest.raises(ValueError, match="num must be >= 2"):
        interpolate(sde, score_fn, x0, x1, 1)


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_temperature_scales_deviations_of_gaussian_data(sde_name):
    sde = get_sde(sde_name)
    score_fn = gaussian_score_fn(sde)
    key, shape = jax.random.key(4), (300, 2)
    ode = dict(eps=EPS, rtol=1e-6, atol=1e-6)
    run = jax.jit(lambda tau: temperature_sample(sde, score_fn, key, shape, tau, **ode).x)
    base = np.asarray(sde.prior_sample(key, shape))
    for tau in (0.0, 0.5, 1.0, 1.5):
        x = np.asarray(run(tau))
        np.testing.assert_allclose(x, gaussian_flow(sde, tau * base, sde.T, EPS), atol=2e-3)
        # The sample spread is tau times the data's (the latent holds ~no trace of the mean).
        np.testing.assert_allclose(
            x.std(0), tau * GAUSS_STD * base.std(0) / sde.prior_std, rtol=0.02, atol=2e-3
        )
    # tau = 1 is the ODE sampler with the same key; tau = 0 decodes the prior mean.
    np.testing.assert_allclose(
        run(1.0), jax.jit(lambda: ode_sample(sde, score_fn, key, shape, **ode).x)(), atol=2e-5
    )
    zero = jnp.zeros(shape)
    np.testing.assert_allclose(
        run(0.0), jax.jit(lambda: decode(sde, score_fn, zero, **ode).x)(), atol=2e-5
    )


# ----------------------------------------------------------------------------------- trajectories


@pytest.mark.parametrize("sde_name", ["vesde", "subvpsde"])
def test_ode_trajectory_follows_the_exact_flow_and_ends_at_ode_sample(sde_name):
    sde = get_sde(sde_name)
    score_fn = gaussian_score_fn(sde)
    x_T = sde.prior_sample(jax.random.key(5), (16, 2))
    ts = np.linspace(sde.T, EPS, 9)
    ode = dict(rtol=1e-6, atol=1e-6)
    tr = jax.jit(lambda x: ode_trajectory(sde, score_fn, x, ts, **ode))(x_T)
    assert tr.xs.shape == (9, 16, 2)
    np.testing.assert_allclose(tr.ts, ts, rtol=1e-6)
    np.testing.assert_array_equal(tr.xs[0], x_T)
    for t, x in zip(ts, np.asarray(tr.xs), strict=True):
        np.testing.assert_allclose(x, gaussian_flow(sde, x_T, sde.T, t), atol=2e-3)
    ref = jax.jit(lambda x: ode_sample(sde, score_fn, None, x.shape, z=x, eps=EPS, **ode))(x_T)
    np.testing.assert_allclose(tr.xs[-1], ref.x, atol=1e-6)
    assert int(tr.nfe) == int(ref.nfe)
    with pytest.raises(ValueError, match="decrease strictly"):
        ode_trajectory(sde, score_fn, x_T, ts[::-1])


def test_reverse_sde_trajectory_marginals_match_the_data_distribution():
    sde = get_sde("vpsde")
    n, steps = 4000, 500
    x_T = sde.prior_sample(jax.random.key(6), (n, 2))

    def run(score_fn, key):
        return reverse_sde_trajectory(sde, score_fn, key, x_T, steps, eps=EPS)

    # A single Gaussian: the path's marginal is N(alpha_t m, r_t^2 I) at every t.
    tr = jax.jit(lambda k: run(gaussian_score_fn(sde), k))(jax.random.key(7))
    assert tr.xs.shape == (steps + 1, n, 2) and tr.nfe == steps
    # The PC grid: steps at linspace(T, EPS, steps), the last one landing at 0.
    np.testing.assert_allclose([tr.ts[0], tr.ts[-2], tr.ts[-1]], [sde.T, EPS, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(tr.xs[0], x_T)
    for i in (steps // 2, 4 * steps // 5, steps):
        t = float(tr.ts[i])
        a, s = _coeffs(sde, t)
        r = math.sqrt(a**2 * GAUSS_STD**2 + s**2)
        x = np.asarray(tr.xs[i], np.float64)
        # Sampling error plus a small discretization bias (500 Euler-Maruyama steps).
        assert np.all(np.abs(x.mean(0) - a * GAUSS_MEAN) < Z * r / math.sqrt(n) + 0.01), (t, x)
        assert np.all(np.abs(x.std(0) / r - 1) < Z * math.sqrt(0.5 / n) + 0.02), (t, x.std(0))
    # The mixture: the endpoints land in the components with the right frequencies.
    tr = jax.jit(lambda k: run(isotropic_score_fn(sde, WEIGHTS, MEANS, STDS), k))(jax.random.key(8))
    ends = tr.xs[-1]
    labels = np.asarray(MIXTURE.responsibilities(ends)).argmax(-1)
    freq = np.bincount(labels, minlength=3) / n
    se = np.sqrt(WEIGHTS * (1 - WEIGHTS) / n)
    assert np.all(np.abs(freq - WEIGHTS) < Z * se + 0.01), freq
    assert float(np.mean(np.asarray(MIXTURE.logpdf(ends)))) > -3.0
