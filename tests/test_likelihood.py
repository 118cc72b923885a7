"""Tests for scoresde_jax.core.likelihood against closed-form densities.

The score networks are replaced by the exact perturbed score of Gaussian mixtures, for which the
model's density is known in closed form, so every check compares with ground truth.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.likelihood import (
    bits_per_dim,
    dequantize,
    log_likelihood,
    logp_to_bpd,
    sample_probes,
)
from scoresde_jax.core.sde import get_sde

EPS = 1e-5

# Mixtures with zero overall mean. The model's prior N(0, s^2 I) then differs from the exact p_T
# only at second order (VE: mixture covariance ~0.3 against sigma_max^2 = 2500; VP, sub-VP:
# alpha_T^2 ~ 4e-5), well below the tolerances; a mean offset would enter at first order.
MIX2 = GaussianMixture(
    np.array([0.3, 0.3, 0.4]),
    np.array([[1.0, 0.5], [-1.0, 0.5], [0.0, -0.75]]),
    np.array([[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.08], [-0.08, 0.25]], [[0.15, 0.0], [0.0, 0.4]]]),
)


def _random_spd(rng, dim, scale):
    a = rng.normal(size=(dim, dim))
    return scale * (a @ a.T / dim + 0.2 * np.eye(dim))


_rng = np.random.default_rng(0)
_m4 = _rng.normal(size=4) * 0.6
MIX4 = GaussianMixture(
    np.array([0.5, 0.5]),
    np.stack([_m4, -_m4]),
    np.stack([_random_spd(_rng, 4, 0.3), _random_spd(_rng, 4, 0.2)]),
)


def _image_score_fn(mixture, sde, shape):
    """The 4-D mixture seen as [B, 2, 2] "images": checks that any data shape works."""
    flat = mixture.score_fn(sde)

    def score_fn(x, t):
        return flat(x.reshape(x.shape[0], -1), t).reshape(x.shape)

    return score_fn


@pytest.mark.parametrize("sde_name", ["vesde", "vpsde", "subvpsde"])
@pytest.mark.parametrize("case", ["2d", "4d_as_2x2"])
def test_exact_trace_matches_mixture_density(sde_name, case):
    sde = get_sde(sde_name)
    mixture = MIX2 if case == "2d" else MIX4
    x = mixture.sample(jax.random.key(1), 8)
    if case == "2d":
        score_fn = mixture.score_fn(sde)
        x_in = x
    else:
        x_in = x.reshape(8, 2, 2)
        score_fn = _image_score_fn(mixture, sde, x_in.shape)

    res = log_likelihood(sde, score_fn, x_in, jax.random.key(0), exact_trace=True)
    assert res.logp.shape == (8,) and res.z.shape == x_in.shape
    assert res.logp.dtype == jnp.float32

    # Error budget against log p_0 (the tolerance is 1e-2 nats per example):
    # * The ODE starts at eps = 1e-5, so the model density is p_eps = p_0 smoothed by
    #   N(0, sigma(eps)^2 I): sigma^2 ~ 1e-6 for VP/sub-VP but sigma_min^2 = 1e-4 for VE, which
    #   shifts log p by ~sigma^2 / 2 (lap log p + |grad log p|^2), ~1e-3 at these points.
    # * The prior is not exactly p_T: second order for mean-zero mixtures, <~ 1e-3 here (far-tail
    #   points map to large |z| and would see more, so the points are drawn from the mixture).
    # * Solver: rtol = atol = 1e-5 on an integral of O(10) nats gives ~1e-4; float32 rounding of
    #   O(10)-nat sums is ~1e-5. Tightening rtol/atol does not change the first two terms.
    truth = mixture.logpdf(x)
    np.testing.assert_allclose(res.logp, truth, rtol=0, atol=1e-2)

    # With both modelling terms removed only the solver error is left, so the bound is tighter:
    # exact log p_eps(x) + (prior_logp(z) - log p_T(z)). The correction uses our z, but only
    # through the tiny, smooth prior-mismatch term.
    b = x.shape[0]
    z_flat = res.z.reshape(b, -1)
    corrected = (
        mixture.marginal_logpdf(sde, x, jnp.full((b,), EPS))
        + sde.prior_logp(z_flat)
        - mixture.marginal_logpdf(sde, z_flat, jnp.full((b,), sde.T))
    )
    np.testing.assert_allclose(res.logp, corrected, rtol=0, atol=2e-3)


_POINTS = jnp.array([[0.8, 0.6], [-0.5, 0.2], [0.3, -1.2]])
_COPIES = 200


@pytest.fixture(scope="module")
def exact_vp_logp():
    sde = get_sde("vpsde")
    return log_likelihood(sde, MIX2.score_fn(sde), _POINTS, jax.random.key(0), exact_trace=True)


@pytest.mark.parametrize("noise,num_probes", [("rademacher", 1), ("gaussian", 2)])
def test_hutchinson_is_unbiased(exact_vp_logp, noise, num_probes):
    sde = get_sde("vpsde")
    # Every example draws its own probes, so copies of a point give independent estimates in
    # one solve.
    x = jnp.repeat(_POINTS, _COPIES, axis=0)
    res = log_likelihood(
        sde, MIX2.score_fn(sde), x, jax.random.key(7), noise=noise, num_probes=num_probes
    )
    est = np.asarray(res.logp, np.float64).reshape(len(_POINTS), _COPIES)
    mean = est.mean(axis=1)
    se = est.std(axis=1, ddof=1) / math.sqrt(_COPIES)
    # The probes are not degenerate: the estimates really vary (correlated mixture components
    # give the Jacobian off-diagonal terms, so even Rademacher probes have variance).
    assert np.all(se > 1e-3)
    # Within 4 standard errors, plus 1e-3 nats for the two solves taking different steps.
    exact = np.asarray(exact_vp_logp.logp)
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)


@pytest.mark.parametrize("noise,num_probes", [("rademacher", 1), ("gaussian", 2)])
def test_estimate_is_quadratic_form_of_fixed_probes(exact_vp_logp, noise, num_probes):
    """With fixed probes the estimate is c + mean_k v_k^T M v_k, M = int J dt, c = prior_logp(z).

    The path x_t, hence c and M, does not depend on the probes, so across copies of a point the
    estimates must be an exact quadratic function of the probes drawn as documented (with
    :func:`sample_probes`), whose value at E[v v^T] = I is the exact log-density. Probes redrawn
    during the solve, or a mis-scaled or mis-averaged divergence, would break this.
    """
    sde = get_sde("vpsde")
    copies = 64
    x = jnp.repeat(_POINTS, copies, axis=0)
    key = jax.random.key(3)
    res = log_likelihood(sde, MIX2.score_fn(sde), x, key, noise=noise, num_probes=num_probes)
    v = np.asarray(sample_probes(key, x.shape, num_probes=num_probes, noise=noise), np.float64)
    # Features [1, v1^2, v2^2, 2 v1 v2] averaged over the K probes; prediction at v v^T = I.
    feats = np.stack(
        [
            np.ones(x.shape[0]),
            *(
                np.mean(f, axis=0)
                for f in (v[..., 0] ** 2, v[..., 1] ** 2, 2 * v[..., 0] * v[..., 1])
            ),
        ],
        axis=-1,
    ).reshape(len(_POINTS), copies, 4)
    est = np.asarray(res.logp, np.float64).reshape(len(_POINTS), copies)
    at_identity = np.array([1.0, 1.0, 1.0, 0.0])
    exact = np.asarray(exact_vp_logp.logp)
    for i in range(len(_POINTS)):
        # For Rademacher v_j^2 = 1, so only c + tr M and M_12 are identified; the minimum-norm
        # least-squares solution still predicts the identifiable value at the identity.
        coef, *_ = np.linalg.lstsq(feats[i], est[i], rcond=None)
        assert np.max(np.abs(feats[i] @ coef - est[i])) < 1e-3
        assert abs(coef[3]) > 1e-2  # the off-diagonal term is really there
        np.testing.assert_allclose(at_identity @ coef, exact[i], rtol=0, atol=1e-3)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_sample_probes_have_identity_second_moment(noise):
    v = sample_probes(jax.random.key(0), (4096, 3, 2), num_probes=8, noise=noise)
    assert v.shape == (8, 4096, 3, 2) and v.dtype == jnp.float32
    if noise == "rademacher":
        np.testing.assert_array_equal(np.abs(v), 1.0)
    flat = np.asarray(v, np.float64).reshape(-1, 6)
    second = flat.T @ flat / flat.shape[0]
    # SE of an entry of E[v v^T] is <= sqrt(2 / n) ~ 0.004 for n = 32768 draws.
    np.testing.assert_allclose(second, np.eye(6), atol=0.02)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=0.03)


@pytest.mark.parametrize(
    "solver,options",
    [
        ("tsit5", dict(exact_trace=True)),
        ("dopri5", dict(noise="gaussian", num_probes=3)),
        ("dopri8", dict(noise="rademacher")),
    ],
)
def test_jit_matches_eager_and_nfe_counts_evaluations(solver, options):
    sde = get_sde("subvpsde")
    base = MIX2.score_fn(sde)
    calls = []

    def counting_score_fn(x, t):
        # Runs once per evaluation of the drift on the device, inside the compiled solver loop.
        jax.debug.callback(lambda _: calls.append(1), t[0])
        return base(x, t)

    x = MIX2.sample(jax.random.key(2), 6)
    key = jax.random.key(4)
    eager = log_likelihood(sde, counting_score_fn, x, key, solver=solver, **options)
    jax.block_until_ready(eager)
    eager_calls = len(calls)
    assert int(eager.nfe) == eager_calls > 10

    # score_fn closes over a traced array, as it would over network parameters.
    @jax.jit
    def jitted(x, key, scale):
        def score_fn(y, t):
            return scale * counting_score_fn(y, t)

        return log_likelihood(sde, score_fn, x, key, solver=solver, **options)

    calls.clear()
    out = jitted(x, key, jnp.float32(1.0))
    jax.block_until_ready(out)
    assert int(out.nfe) == len(calls)
    np.testing.assert_allclose(out.logp, eager.logp, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out.z, eager.z, rtol=0, atol=1e-4)
    assert int(out.nfe) == int(eager.nfe)
    if options.get("exact_trace"):
        np.testing.assert_allclose(out.logp, MIX2.logpdf(x), rtol=0, atol=1e-2)


@pytest.mark.parametrize("noise,num_probes", [("rademacher", 1), ("gaussian", 2)])
def test_given_probes_replace_the_keyed_draw(noise, num_probes):
    """``probes=`` (e.g. another implementation's draw) are used as given, and the key then
    draws nothing: the keyed solve with the same draw gives the same numbers."""
    sde = get_sde("vpsde")
    x = jnp.repeat(_POINTS, 4, axis=0)
    key = jax.random.key(5)
    keyed = log_likelihood(sde, MIX2.score_fn(sde), x, key, noise=noise, num_probes=num_probes)
    probes = sample_probes(key, x.shape, num_probes=num_probes, noise=noise)
    given = log_likelihood(sde, MIX2.score_fn(sde), x, jax.random.key(99), probes=probes)
    np.testing.assert_array_equal(given.logp, keyed.logp)
    assert int(given.nfe) == int(keyed.nfe)
    other = log_likelihood(sde, MIX2.score_fn(sde), x, key, probes=probes[:, ::-1])
    assert not np.allclose(other.logp, keyed.logp)  # the given probes are really the ones used


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(probes=jnp.ones((2, 2))), "probes must have shape"),
        (dict(probes=jnp.ones((1, 2, 3))), "probes must have shape"),
        (dict(probes=jnp.ones((1, 2, 2)), exact_trace=True), "exact_trace"),
        (dict(noise="uniform"), "noise"),
        (dict(solver="euler"), "solver"),
        (dict(num_probes=0), "num_probes"),
        (dict(num_probes=1.5), "num_probes"),
        (dict(eps=1.0), "eps"),
    ],
)
def test_invalid_options_raise(kwargs, match):
    sde = get_sde("vpsde")
    x = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match=match):
        log_likelihood(sde, MIX2.score_fn(sde), x, jax.random.key(0), **kwargs)
    with pytest.raises(ValueError, match="noise"):
        sample_probes(jax.random.key(0), (2, 2), noise="cauchy")


def test_solver_failure_gives_nan():
    sde = get_sde("vpsde")
    x = MIX2.sample(jax.random.key(0), 3)
    res = log_likelihood(sde, MIX2.score_fn(sde), x, jax.random.key(0), max_steps=4)
    assert np.all(np.isnan(res.logp))


def test_logp_to_bpd_closed_form():
    d = 12
    # The uniform density on [0,1]^D (logp 0) is 8 bits/dim: each 8-bit value is equally likely.
    np.testing.assert_allclose(logp_to_bpd(jnp.zeros(3), d), 8.0)
    # The same uniform model on [-1,1]^D has density 2^-D and is still 8 bits/dim.
    np.testing.assert_allclose(logp_to_bpd(jnp.full((3,), -d * math.log(2)), d, data_width=2), 8)
    # A density of e^{-D} on data in [-1, 1]: 1/ln 2 bits per dim above the 7-bit offset.
    np.testing.assert_allclose(
        logp_to_bpd(jnp.array([-d]), d, data_width=2.0), [7 + 1 / math.log(2)], rtol=1e-6
    )
    # Uniform on [0,1]^D with 16 bins: 4 bits.
    np.testing.assert_allclose(logp_to_bpd(jnp.zeros(1), d, num_bins=16), [4.0])


def test_dequantize_stays_in_bins_with_the_right_mean():
    k = jnp.arange(256, dtype=jnp.float32)
    x = k / 255
    n = 2048
    y = jax.vmap(lambda key: dequantize(key, x))(jax.random.split(jax.random.key(0), n))
    assert y.shape == (n, 256) and y.dtype == jnp.float32
    # Every draw lies in its own bin [k/256, (k+1)/256).
    np.testing.assert_array_equal(jnp.floor(y * 256), jnp.broadcast_to(k, y.shape))
    assert float(jnp.max(y)) < 1.0 and float(jnp.min(y)) >= 0.0
    # E[y] = (255 x + 1/2)/256; the draws are uniform with variance 1/(12 * 256^2).
    se = 1 / math.sqrt(12) / 256 / math.sqrt(n)
    np.testing.assert_allclose(jnp.mean(y, axis=0), (255 * x + 0.5) / 256, rtol=0, atol=5 * se)
    np.testing.assert_allclose(jnp.var(y, axis=0), 1 / (12 * 256**2), rtol=0.15)
    # Integer-valued inputs and float error in k/255 land in the right bin too.
    y_int = dequantize(jax.random.key(1), jnp.array([0, 1]))
    assert y_int.dtype == jnp.float32
    np.testing.assert_array_equal(jnp.floor(dequantize(jax.random.key(1), x - 1e-7) * 256), k)


def test_bits_per_dim_of_gaussian_matches_closed_form_bound():
    """VP model with the exact score of a known Gaussian on centered 8-bit data in 3-D."""
    d, b = 3, 48
    mu = np.array([0.05, -0.1, 0.0])
    std = np.array([0.35, 0.5, 0.25])
    gauss = GaussianMixture(np.ones(1), mu[None], np.diag(std**2)[None])
    sde = get_sde("vpsde")
    # 8-bit data from the Gaussian (clipped to [-1, 1]) as k/255.
    xc = np.clip(np.asarray(gauss.sample(jax.random.key(5), b)), -1, 1)
    k = np.round((xc + 1) / 2 * 255)
    x01 = jnp.asarray(k / 255, jnp.float32)
    key = jax.random.key(6)
    res = bits_per_dim(sde, gauss.score_fn(sde), x01, key, centered=True, exact_trace=True)
    assert res.bpd.shape == (b,) and res.z.shape == (b, d)

    # 1) Per example: the bound for the dequantized point that was used (the documented key
    #    split), -log N(2u - 1; mu, S) / (D ln 2) + 7.
    u = dequantize(jax.random.split(key)[0], x01)
    y = 2 * np.asarray(u, np.float64) - 1
    logn = scipy.stats.multivariate_normal(mu, np.diag(std**2)).logpdf(y)
    np.testing.assert_allclose(res.logp, logn, rtol=0, atol=1e-2)
    np.testing.assert_allclose(res.bpd, -logn / (d * math.log(2)) + 7, rtol=0, atol=5e-3)

    # 2) On average over the dequantization noise: the closed-form expected bound. With
    #    y = 2u - 1 uniform on the bin [lo, hi) of width h = 2/256 per axis,
    #    E[(y - mu)^2] = (centre - mu)^2 + h^2/12.
    h = 2 / 256
    lo = 2 * k / 256 - 1
    centre = lo + h / 2
    sq = ((centre - mu) ** 2 + h**2 / 12) / std**2
    expected_nll = 0.5 * np.sum(sq + np.log(2 * math.pi * std**2), axis=-1)
    bound = expected_nll / (d * math.log(2)) + 7
    diff = np.asarray(res.bpd, np.float64) - bound
    se = diff.std(ddof=1) / math.sqrt(b)
    assert abs(diff.mean()) < 4 * se + 2e-3

    # 3) The bound is above the discrete model's exact bits/dim, -log2 P(bin) / D, and close to
    #    it because the bins are narrow compared with the Gaussian.
    cdf = scipy.stats.norm.cdf
    prob = cdf((lo + h - mu) / std) - cdf((lo - mu) / std)
    exact_bits = -np.sum(np.log2(prob), axis=-1) / d
    assert np.all(bound >= exact_bits - 1e-9)
    np.testing.assert_allclose(bound, exact_bits, atol=1e-3)
