"""Tests of scoresde_jax.core.sde against the paper's formulas, scipy and forward simulations."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sde_reference as ref
from scipy import integrate, stats

from scoresde_jax.core import sde as sde_lib
from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.sde import VESDE, VPSDE, SubVPSDE, get_sde

# Times that include the stiff region near 0, where sigma_t must stay accurate.
TIMES = np.asarray([1e-6, 1e-5, 1e-3, 0.01, 0.1, 0.37, 0.5, 0.9, 1.0], np.float32)


def _x(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


# ----------------------------------------------------------------------------------------------
# Closed-form coefficients.


@pytest.mark.parametrize("name", ref.NAMES)
def test_drift_diffusion_matches_paper(name):
    sde = get_sde(name)
    x = _x((TIMES.size, 3, 2))
    drift, diffusion = sde.drift_diffusion(x, jnp.asarray(TIMES))
    _, _, g2, f = ref.coefficients(name, TIMES.astype(np.float64))
    np.testing.assert_allclose(drift, f[:, None, None] * np.asarray(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(diffusion, np.sqrt(g2), rtol=1e-5)
    assert diffusion.shape == (TIMES.size,)


@pytest.mark.parametrize("name", ref.NAMES)
def test_marginal_prob_matches_paper(name):
    sde = get_sde(name)
    x = _x((TIMES.size, 4))
    mean, std = sde.marginal_prob(x, jnp.asarray(TIMES))
    alpha, sigma, _, _ = ref.coefficients(name, TIMES.astype(np.float64))
    np.testing.assert_allclose(mean, alpha[:, None] * np.asarray(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(std, sigma, rtol=1e-5)


def test_subvp_variance_is_bounded_by_vp():
    t = jnp.linspace(1e-5, 1.0, 101)
    _, vp = get_sde("vpsde").marginal_coeffs(t)
    _, subvp = get_sde("subvpsde").marginal_coeffs(t)
    assert np.all(np.asarray(subvp) <= np.asarray(vp))


# ----------------------------------------------------------------------------------------------
# marginal_prob against a simulation of the forward SDE from a Gaussian mixture.

MIXTURE = GaussianMixture(
    weights=np.array([0.5, 0.3, 0.2]),
    means=np.array([[2.0, -1.0], [-3.0, 0.5], [0.5, 4.0]]),
    covs=np.array([[[0.5, 0.2], [0.2, 0.3]], [[0.2, 0.0], [0.0, 1.0]], [[1.0, -0.4], [-0.4, 0.6]]]),
)
SIM_TIMES = (0.05, 0.3, 1.0)
SIM_STEPS = 2000
SIM_SAMPLES = 40_000


def _simulate(sde, key):
    """Euler--Maruyama from exact p_0 samples: ``x_0 [n, D]`` and the states ``[3, n, D]`` at
    ``SIM_TIMES``."""
    k0, k1, k2 = jax.random.split(key, 3)
    x0 = MIXTURE.sample(k0, SIM_SAMPLES)
    # VE's kernel N(x_0, sigma(t)^2 I) counts sigma(0)^2 = sigma_min^2 into the variance: the
    # process starts from the data already perturbed by sigma_min (paper, Appendix B, where
    # sigma(t)^2 - sigma_min^2 is approximated by sigma(t)^2). Start the simulation there too.
    _, sigma0 = sde.marginal_coeffs(jnp.zeros(()))
    start = x0 + sigma0 * jax.random.normal(k2, x0.shape) if isinstance(sde, VESDE) else x0
    dt = 1.0 / SIM_STEPS
    record = jnp.asarray([round(s * SIM_STEPS) for s in SIM_TIMES])

    def step(carry, inputs):
        x, snapshots = carry
        k, key = inputs
        t = jnp.full((SIM_SAMPLES,), k * dt)
        drift, diffusion = sde.drift_diffusion(x, t)
        x = x + drift * dt + diffusion[:, None] * math.sqrt(dt) * jax.random.normal(key, x.shape)
        # Keeping only the snapshots (not the whole path) bounds the memory.
        snapshots = jnp.where((record == k + 1)[:, None, None], x[None], snapshots)
        return (x, snapshots), None

    ks = jnp.arange(SIM_STEPS)
    init = (start, jnp.zeros((len(SIM_TIMES),) + x0.shape))
    (_, snapshots), _ = jax.lax.scan(step, init, (ks, jax.random.split(k1, SIM_STEPS)))
    return x0, snapshots


def _mixture_cdf_first_coord(v, alpha, sigma):
    scales = np.sqrt(alpha**2 * MIXTURE.covs[:, 0, 0] + sigma**2)
    z = (v[:, None] - alpha * MIXTURE.means[None, :, 0]) / scales[None]
    return stats.norm.cdf(z) @ MIXTURE.weights


def _euler_maruyama_moments(name, t):
    """``(a, v)``: mean coefficient and variance of the simulated kernel, without sampling error.

    The Euler--Maruyama chain on a linear SDE stays Gaussian given ``x_0``; running its moment
    recursion in float64 gives the scheme's exact bias against ``(alpha_t, sigma_t^2)``, which the
    tolerances below allow for on top of the sampling error.
    """
    dt = 1.0 / SIM_STEPS
    a, v = 1.0, (ref.SIGMA_MIN**2 if name == "vesde" else 0.0)
    for k in range(round(t * SIM_STEPS)):
        _, _, g2, f = ref.coefficients(name, np.float64(k * dt))
        a, v = (1 + f * dt) * a, (1 + f * dt) ** 2 * v + g2 * dt
    return a, v


@pytest.mark.parametrize("name", ref.NAMES)
def test_marginal_prob_matches_forward_simulation(name):
    sde = get_sde(name)
    x0, snapshots = jax.jit(_simulate, static_argnums=0)(sde, jax.random.key(0))
    x0_64 = np.asarray(x0, np.float64)
    mu0, cov0 = MIXTURE.mean(), MIXTURE.covariance()
    n, d = x0.shape
    for t, xs in zip(SIM_TIMES, np.asarray(snapshots, np.float64), strict=True):
        mean, std = sde.marginal_prob(x0, jnp.full((n,), t))
        sigma = float(std[0])
        alpha = float(sde.marginal_prob(jnp.ones((1, 1)), jnp.full((1,), t))[0][0, 0])
        a_em, v_em = _euler_maruyama_moments(name, t)

        # The perturbation kernel: given x_0, x_t - mean(x_0) is N(0, sigma^2 I), independent of
        # x_0 (5 standard errors plus twice the scheme's bias).
        resid = xs - np.asarray(mean, np.float64)
        np.testing.assert_array_less(np.abs(resid.mean(0)), 5 * sigma / math.sqrt(n))
        var_err = abs(np.mean(resid**2) / sigma**2 - 1)
        assert var_err < 5 * math.sqrt(2 / (n * d)) + 2 * abs(v_em / sigma**2 - 1) + 1e-3, t
        cross = (resid - resid.mean(0)).T @ (x0_64 - x0_64.mean(0)) / n
        tol = 5 * sigma * x0_64.std(0) / math.sqrt(n) + 2 * abs(a_em - alpha) * np.abs(cov0).max()
        np.testing.assert_array_less(np.abs(cross), np.broadcast_to(tol, cross.shape))

        # The marginal: the mixture's moments propagated through (alpha_t, sigma_t).
        want_mean = alpha * mu0
        want_cov = alpha**2 * cov0 + sigma**2 * np.eye(d)
        em_cov = a_em**2 * cov0 + v_em * np.eye(d)
        np.testing.assert_array_less(np.abs(xs.mean(0) - want_mean), 5 * xs.std(0) / math.sqrt(n))
        centred = xs - xs.mean(0)
        prods = centred[:, :, None] * centred[:, None, :]
        se_cov = prods.std(0) / math.sqrt(n)
        np.testing.assert_array_less(
            np.abs(prods.mean(0) - want_cov), 5 * se_cov + 2 * np.abs(em_cov - want_cov)
        )
        # The whole law, not only two moments: p_t is the mixture convolved with N(0, sigma^2).
        ks = stats.kstest(xs[:, 0], lambda v, a=alpha, s=sigma: _mixture_cdf_first_coord(v, a, s))
        assert ks.pvalue > 1e-3, (t, ks)


# ----------------------------------------------------------------------------------------------
# Prior.


@pytest.mark.parametrize("name", ref.NAMES)
def test_prior_logp_matches_scipy(name):
    sde = get_sde(name)
    std = ref.SIGMA_MAX if name == "vesde" else 1.0
    z = std * _x((5, 2, 3), seed=1)
    want = stats.multivariate_normal(np.zeros(6), std**2 * np.eye(6)).logpdf(
        np.asarray(z, np.float64).reshape(5, 6)
    )
    got = sde.prior_logp(z)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("name", ref.NAMES)
def test_prior_sample_moments(name):
    sde = get_sde(name)
    std = ref.SIGMA_MAX if name == "vesde" else 1.0
    n = 20_000
    z = np.asarray(sde.prior_sample(jax.random.key(2), (n, 2, 2)), np.float64).reshape(n, -1)
    assert z.shape == (n, 4)
    np.testing.assert_array_less(np.abs(z.mean(0)), 5 * std / math.sqrt(n))
    np.testing.assert_array_less(np.abs(z.std(0) - std), 5 * std / math.sqrt(2 * n))
    np.testing.assert_array_less(np.abs(np.corrcoef(z.T) - np.eye(4)), 5 / math.sqrt(n))


# ----------------------------------------------------------------------------------------------
# Discretizations: DDPM and SMLD.


def _grid(n):
    # Correctly rounded float32 grid t_i = i / (N - 1), which the floor in the time-to-index map
    # sends back to i exactly.
    return jnp.asarray(np.arange(n, dtype=np.float32) / np.float32(n - 1))


def test_ddpm_schedule():
    sde = get_sde("vpsde")
    np.testing.assert_allclose(sde.discrete_betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-6)
    np.testing.assert_allclose(sde.alphas_cumprod, ref.ddpm_alphas_cumprod(), rtol=2e-4)
    np.testing.assert_allclose(sde.sqrt_alphas_cumprod**2, ref.ddpm_alphas_cumprod(), rtol=2e-4)
    np.testing.assert_allclose(
        sde.sqrt_1m_alphas_cumprod**2, 1 - ref.ddpm_alphas_cumprod(), rtol=1e-4, atol=1e-7
    )
    # The Langevin corrector uses sub-VP's alphas: they are VP's.
    np.testing.assert_array_equal(get_sde("subvpsde").alphas, sde.alphas)


def test_vp_discretize_is_the_ddpm_step():
    sde = get_sde("vpsde")
    betas = ref.ddpm_betas()
    x = _x((1000, 3))
    f, g = sde.discretize(x, _grid(1000))
    np.testing.assert_allclose(f, (np.sqrt(1 - betas) - 1)[:, None] * np.asarray(x), atol=1e-6)
    np.testing.assert_allclose(g, np.sqrt(betas), rtol=1e-5)


def test_vp_discretize_chain_has_ddpm_marginals():
    sde = get_sde("vpsde")
    n, x0 = 20_000, 1.5
    checkpoints = np.array([0, 9, 99, 499, 999])

    def step(x, inputs):
        t, key = inputs
        f, g = sde.discretize(x, jnp.full((n,), t))
        x = x + f + g[:, None] * jax.random.normal(key, x.shape)
        return x, x

    keys = jax.random.split(jax.random.key(3), 1000)
    _, path = jax.jit(lambda: jax.lax.scan(step, jnp.full((n, 1), x0), (_grid(1000), keys)))()
    xs = np.asarray(path, np.float64)[checkpoints, :, 0]
    abar = ref.ddpm_alphas_cumprod()[checkpoints]  # after step i the chain is at DDPM's x_{i+1}
    want_var = 1 - abar
    np.testing.assert_array_less(np.abs(xs.mean(1) - x0 * np.sqrt(abar)), 5 * np.sqrt(want_var / n))
    np.testing.assert_array_less(np.abs(xs.var(1) / want_var - 1), 5 * math.sqrt(2 / n))

    # The same recursion on the moments, without sampling error: Var = 1 - prod(1 - beta).
    f1, g = sde.discretize(jnp.ones((1000, 1)), _grid(1000))
    a = 1.0 + np.asarray(f1, np.float64)[:, 0]
    g = np.asarray(g, np.float64)
    var = np.zeros(1000)
    v = 0.0
    for i in range(1000):
        v = a[i] ** 2 * v + g[i] ** 2
        var[i] = v
    np.testing.assert_allclose(var, 1 - ref.ddpm_alphas_cumprod(), rtol=1e-4)


def test_smld_sigmas_and_discretize():
    sde = get_sde("vesde")
    sigmas = np.asarray(sde.discrete_sigmas, np.float64)
    np.testing.assert_allclose(sigmas, ref.smld_sigmas(), rtol=1e-5)
    np.testing.assert_allclose([sigmas[0], sigmas[-1]], [0.01, 50.0], rtol=1e-6)
    ratios = sigmas[1:] / sigmas[:-1]
    np.testing.assert_allclose(ratios, (50.0 / 0.01) ** (1 / 999), rtol=1e-5)

    x = _x((1000, 2))
    f, g = sde.discretize(x, _grid(1000))
    np.testing.assert_array_equal(f, 0.0)
    g2 = np.asarray(g, np.float64) ** 2
    s = ref.smld_sigmas()
    # G_i^2 = sigma_i^2 - sigma_{i-1}^2, with sigma_0 := 0 for the first step, so the variance
    # added by steps 1..i telescopes to exactly sigma_i^2.
    np.testing.assert_allclose(g2, np.diff(s**2, prepend=0.0), rtol=1e-4)
    np.testing.assert_allclose(np.cumsum(g2), s**2, rtol=1e-4)
    # ... which is the continuous VE marginal variance on the grid.
    _, std = sde.marginal_prob(x, _grid(1000))
    np.testing.assert_allclose(np.cumsum(g2), np.asarray(std, np.float64) ** 2, rtol=1e-4)


def test_subvp_discretize_is_euler_maruyama():
    sde = get_sde("subvpsde", N=100)
    t = jnp.asarray(TIMES)
    x = _x((TIMES.size, 3))
    f, g = sde.discretize(x, t)
    _, _, g2, fc = ref.coefficients("subvpsde", TIMES.astype(np.float64))
    np.testing.assert_allclose(f, (fc / 100)[:, None] * np.asarray(x), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g, np.sqrt(g2 / 100), rtol=1e-5)


def test_vp_marginal_std_converges_to_ddpm():
    """``abar_i`` (i + 1 factors) approximates ``exp(-B((i + 1) / N))`` with an O(1/N) error."""
    errs = []
    for n in (100, 1000, 10_000):
        sde = get_sde("vpsde", N=n)
        t = jnp.asarray((np.arange(n) + 1) / n, jnp.float32)
        mean, std = sde.marginal_prob(jnp.ones((n, 1)), t)
        abar = np.asarray(sde.alphas_cumprod, np.float64)
        errs.append(
            max(
                np.abs(np.asarray(std) - np.sqrt(1 - abar)).max(),
                np.abs(np.asarray(mean)[:, 0] - np.sqrt(abar)).max(),
            )
        )
    assert errs[1] < 0.15 * errs[0] and errs[2] < 0.15 * errs[1], errs
    assert errs[2] < 2e-4, errs


# ----------------------------------------------------------------------------------------------
# Reverse-time dynamics.


def _toy_score(x, t):
    return -x * (1.0 + t)[:, None] + 0.3


def _np_discretize(name, x, t, n=1000):
    if name == "vesde":
        i = np.floor(t * (n - 1)).astype(int)
        s = ref.smld_sigmas(n)
        prev = np.where(i == 0, 0.0, s[np.maximum(i - 1, 0)])
        return np.zeros_like(x), np.sqrt(s[i] ** 2 - prev**2)
    if name == "vpsde":
        b = ref.ddpm_betas(n)[np.floor(t * (n - 1)).astype(int)]
        return (np.sqrt(1 - b) - 1)[:, None] * x, np.sqrt(b)
    _, _, g2, fc = ref.coefficients(name, t)
    return (fc / n)[:, None] * x, np.sqrt(g2 / n)


@pytest.mark.parametrize("name", ref.NAMES)
@pytest.mark.parametrize("probability_flow", [False, True])
def test_reverse_dynamics_match_hand_computation(name, probability_flow):
    sde = get_sde(name)
    t = np.asarray([0.003, 0.2, 0.55, 0.81, 1.0], np.float32)
    x = _x((5, 3))
    t64, x64 = t.astype(np.float64), np.asarray(x, np.float64)
    s = x64 * -(1.0 + t64)[:, None] + 0.3
    coef = 0.5 if probability_flow else 1.0

    drift, diffusion = sde_lib.reverse_drift_diffusion(
        sde, _toy_score, x, jnp.asarray(t), probability_flow=probability_flow
    )
    _, _, g2, fc = ref.coefficients(name, t64)
    want_drift = fc[:, None] * x64 - coef * g2[:, None] * s
    np.testing.assert_allclose(drift, want_drift, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(diffusion, 0.0 if probability_flow else np.sqrt(g2), rtol=1e-5)
    if probability_flow:
        np.testing.assert_allclose(
            sde_lib.probability_flow_drift(sde, _toy_score, x, jnp.asarray(t)), drift, rtol=1e-6
        )

    rev_f, rev_g = sde_lib.reverse_discretize(
        sde, _toy_score, x, jnp.asarray(t), probability_flow=probability_flow
    )
    f, g = _np_discretize(name, x64, t64)
    np.testing.assert_allclose(rev_f, f - coef * (g**2)[:, None] * s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rev_g, 0.0 if probability_flow else g, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Importance sampling of t.


def _weight_density(name, t):
    _, sigma, g2, _ = ref.coefficients(name, t)
    return g2 / sigma**2


def _numerical_cdf(name, eps):
    """CDF of q(t) ∝ g^2/sigma^2 on [eps, 1] by the trapezoid rule on a log grid."""
    u = np.linspace(math.log(eps), 0.0, 200_001)
    t = np.exp(u)
    cum = integrate.cumulative_trapezoid(_weight_density(name, t) * t, u, initial=0.0)
    z = cum[-1]
    return (lambda v: np.interp(np.log(np.clip(v, eps, 1.0)), u, cum / z)), z


@pytest.mark.parametrize("name", ref.NAMES)
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_importance_sample_t_distribution(name, eps):
    sde = get_sde(name)
    n = 20_000
    t, w = sde_lib.importance_sample_t(sde, jax.random.key(5), (n,), eps)
    t, w = np.asarray(t, np.float64), np.asarray(w, np.float64)
    assert t.shape == w.shape == (n,)
    assert t.min() >= eps and t.max() <= 1.0

    cdf, z = _numerical_cdf(name, eps)
    ks = stats.kstest(t, cdf)
    assert ks.pvalue > 1e-3, ks
    # w is the density ratio Uniform(eps, T) / q.
    want_w = z / ((1.0 - eps) * _weight_density(name, t))
    np.testing.assert_allclose(w, want_w, rtol=2e-3)

    # Unbiasedness for an arbitrary function of t: E_q[w l] = E_U[l].
    ell = np.cos(3 * t) + t**2
    exact = (math.sin(3.0) - math.sin(3 * eps)) / 3 + (1 - eps**3) / 3
    exact /= 1.0 - eps
    est = w * ell
    assert abs(est.mean() - exact) < 5 * est.std() / math.sqrt(n), (est.mean(), exact)


def test_importance_sample_t_is_uniform_for_ve():
    t, w = sde_lib.importance_sample_t(get_sde("vesde"), jax.random.key(6), (20_000,), 1e-5)
    np.testing.assert_array_equal(w, 1.0)
    assert stats.kstest(np.asarray(t), stats.uniform(1e-5, 1 - 1e-5).cdf).pvalue > 1e-3


# ----------------------------------------------------------------------------------------------
# Construction, errors and use as static values.


def test_get_sde_defaults_and_aliases():
    assert get_sde("vesde") == VESDE(sigma_min=0.01, sigma_max=50.0, N=1000, T=1.0)
    assert get_sde("vpsde") == VPSDE(beta_min=0.1, beta_max=20.0, N=1000, T=1.0)
    assert get_sde("subvpsde") == SubVPSDE(beta_min=0.1, beta_max=20.0, N=1000, T=1.0)
    assert isinstance(get_sde("VE"), VESDE)
    assert isinstance(get_sde("vp"), VPSDE)
    assert isinstance(get_sde("sub-vp"), SubVPSDE)
    assert get_sde("vesde", sigma_max=378.0, N=2000).sigma_max == 378.0


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("cld", {}, "Unknown SDE"),
        ("vesde", {"beta_min": 0.1}, "Unknown parameter"),
        ("vpsde", {"sigma_max": 1.0}, "Unknown parameter"),
        ("vesde", {"sigma_min": 1.0, "sigma_max": 0.5}, "sigma_min"),
        ("vesde", {"sigma_min": 0.0}, "sigma_min"),
        ("vpsde", {"beta_min": 5.0, "beta_max": 1.0}, "beta_min"),
        ("subvpsde", {"N": 0}, "N >= 1"),
        ("vesde", {"T": 0.0}, "T > 0"),
    ],
)
def test_get_sde_errors(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_sde(name, **params)


@pytest.mark.parametrize("name", ref.NAMES)
def test_sde_is_hashable_and_static(name):
    a, b = get_sde(name), get_sde(name)
    assert a == b and hash(a) == hash(b) and a is not b
    assert len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.N = 10  # type: ignore[misc]

    traces = []

    def f(sde, x):
        traces.append(sde)
        return sde.marginal_prob(x, jnp.full((x.shape[0],), 0.5))[1]

    jf = jax.jit(f, static_argnums=0)
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(jf(a, x), jf(b, x))
    assert len(traces) == 1  # an equal SDE reuses the compiled function
    other = get_sde(name, N=10, T=2.0)
    jf(other, x)
    assert len(traces) == 2  # different parameters are a different static value


@pytest.mark.parametrize("name", ["vesde", "vpsde", "subvpsde"])
def test_noise_parametrization_is_one_consistent_set(name):
    # x_t = s(t) (x_0 + sigma(t) z): every method of the parametrization against the marginal
    # coefficients, in float64 on host numbers and in float32 on arrays, and each inverse map.
    sde = sde_lib.get_sde(name)
    ts = np.linspace(1e-3, sde.T, 37)
    if name == "vesde":  # the closed forms of the paper, Appendix B, in float64
        alpha, std = np.ones_like(ts), 0.01 * 5000.0**ts
    else:
        b = 0.1 * ts + 0.5 * (20.0 - 0.1) * ts**2
        alpha = np.exp(-0.5 * b)
        std = np.sqrt(-np.expm1(-b)) if name == "vpsde" else -np.expm1(-b)
    for t, a, s in zip(ts, alpha, std, strict=True):
        sigma = sde.noise_level(float(t))
        assert isinstance(sigma, float)  # host numbers stay float64 (static grids)
        np.testing.assert_allclose(sigma, s / a, rtol=1e-12)
        np.testing.assert_allclose(sde.scale_of_noise_level(sigma), a, rtol=1e-12)
        np.testing.assert_allclose(sde.marginal_std(float(t)), s, rtol=1e-12)
        np.testing.assert_allclose(sde.log_snr(float(t)), np.log(a**2 / s**2), rtol=1e-10)
        np.testing.assert_allclose(sde.time_of_noise_level(sigma), t, rtol=1e-10)
        np.testing.assert_allclose(sde.time_of_marginal_std(s), t, rtol=1e-9)
    t32 = jnp.asarray(ts, jnp.float32)
    sigma32 = sde.noise_level(t32)
    assert isinstance(sigma32, jax.Array) and sigma32.dtype == jnp.float32
    np.testing.assert_allclose(sigma32, std / alpha, rtol=2e-5)
    np.testing.assert_allclose(sde.time_of_noise_level(sigma32), ts, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(sde.time_of_marginal_std(sde.marginal_std(t32)), ts, rtol=2e-3)


def test_sdes_outside_the_package_are_refused():
    with pytest.raises(TypeError, match="needs an SDE"):
        sde_lib.check_sde(object(), "a sampler")
