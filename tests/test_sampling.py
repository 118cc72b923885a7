"""Samplers against ground truth: a 2-D Gaussian mixture sampled with its exact score.

Every sampler run draws ``BATCH`` points with the closed-form score of ``MIXTURE``; the checks
compare the result with the mixture itself (never with another sampler's output), with
tolerances of ``Z`` standard errors of the estimator at that sample size:

* component weights (samples assigned by maximum responsibility): binomial standard error;
* per-component means and standard deviations: ``std_k / sqrt(n_k)`` and ``std_k / sqrt(2 n_k)``;
* the overall covariance: ``sqrt(Var[(x_i - m_i)(x_j - m_j)] / n)``, with the fourth moments of
  the mixture in closed form.

The components are more than 8 standard deviations apart, so assigning samples by responsibility
misclassifies essentially none of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from mixture_scores import counting, isotropic_score_fn

from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.sde import get_sde
from scoresde_jax.sampling import (
    CORRECTORS,
    PREDICTORS,
    SampleResult,
    decode,
    encode,
    ode_sample,
    pc_sample,
)

SDE_NAMES = ("vesde", "vpsde", "subvpsde")
WEIGHTS = np.array([0.2, 0.3, 0.5])
MEANS = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, 0.0]])
STDS = np.array([0.3, 0.4, 0.5])
MIXTURE = GaussianMixture.isotropic(WEIGHTS, MEANS, STDS)
BATCH = 2000
# About 800 z-scores are checked over the whole file; for a correct sampler one of them exceeds 5
# by chance with probability ~5e-4, while the biases we look for show up as tens of sigmas.
Z = 5.0


def exact_score_fn(sde, mixture=MIXTURE, stds=STDS):
    """Closed-form score of the perturbed isotropic mixture (see tests/mixture_scores.py)."""
    return isotropic_score_fn(sde, mixture.weights, mixture.means, stds)


def covariance_standard_errors(mixture=MIXTURE, stds=STDS):
    """``sqrt(Var[(x_i - m_i)(x_j - m_j)])`` of the isotropic mixture, ``[D, D]``.

    Within component ``k``, ``y = x - m = d_k + s_k z`` with ``d_k = mu_k - m``, so
    ``E[y_i^2 y_j^2] = (d_i^2 + s^2)(d_j^2 + s^2)`` for ``i != j`` and
    ``E[y_i^4] = d_i^4 + 6 d_i^2 s^2 + 3 s^4``.
    """
    d = mixture.means - mixture.mean()
    s2 = (np.asarray(stds) ** 2)[:, None]
    second = d**2 + s2  # [K, D]
    fourth = np.einsum("k,ki,kj->ij", mixture.weights, second, second)
    diag = mixture.weights @ (d**4 + 6 * d**2 * s2 + 3 * s2**2)
    fourth[np.diag_indices_from(fourth)] = diag
    return np.sqrt(fourth - mixture.covariance() ** 2)


COV_SE = covariance_standard_errors()


def assert_matches_mixture(x, *, check_means=True):
    """Asserts that samples ``x: [n, 2]`` are a plausible draw from ``MIXTURE``."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    assert np.all(np.isfinite(x)), "non-finite samples"
    labels = np.argmax(np.asarray(MIXTURE.responsibilities(jnp.asarray(x, jnp.float32))), axis=1)
    counts = np.bincount(labels, minlength=len(WEIGHTS))
    weights_se = np.sqrt(WEIGHTS * (1 - WEIGHTS) / n)
    z_weights = (counts / n - WEIGHTS) / weights_se
    assert np.all(np.abs(z_weights) < Z), f"weights {counts / n} vs {WEIGHTS}, z={z_weights}"
    for k in range(len(WEIGHTS)):
        xk = x[labels == k]
        nk = len(xk)
        z_std = (xk.std(axis=0) / STDS[k] - 1) * np.sqrt(2 * nk)
        assert np.all(np.abs(z_std) < Z), f"component {k} std {xk.std(axis=0)}, z={z_std}"
        if check_means:
            z_mean = (xk.mean(axis=0) - MEANS[k]) / (STDS[k] / np.sqrt(nk))
            assert np.all(np.abs(z_mean) < Z), f"component {k} mean {xk.mean(0)}, z={z_mean}"
    if check_means:
        z_cov = (np.cov(x.T) - MIXTURE.covariance()) / (COV_SE / np.sqrt(n))
        assert np.all(np.abs(z_cov) < Z), f"covariance {np.cov(x.T)}, z={z_cov}"


def test_exact_score_matches_gmm_module():
    key_x, key_t = jax.random.split(jax.random.key(0))
    x = 3.0 * jax.random.normal(key_x, (256, 2))
    t = jnp.concatenate([jnp.array([1e-3, 1.0]), jax.random.uniform(key_t, (254,))])
    for name in SDE_NAMES:
        sde = get_sde(name)
        want = jax.jit(MIXTURE.score_fn(sde))(x, t)
        got = jax.jit(exact_score_fn(sde))(x, t)
        # Scores reach ~1/s_min^2 = 11 in magnitude; float32 Cholesky vs. direct formula.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_checks_reject_a_wrong_distribution():
    # The tolerances must not be so loose that a visibly wrong model passes: sample with the
    # exact score of a mixture with other weights, then with wider components.
    sde = get_sde("vpsde")
    wrong_weights = GaussianMixture.isotropic([0.3, 0.3, 0.4], MEANS, STDS)
    wider = 1.3 * STDS
    wide = GaussianMixture.isotropic(WEIGHTS, MEANS, wider)
    for mixture, stds in ((wrong_weights, STDS), (wide, wider)):
        score_fn = exact_score_fn(sde, mixture, stds)
        sample = jax.jit(
            lambda key, score_fn=score_fn: pc_sample(
                sde, score_fn, key, (BATCH, 2), predictor="reverse_diffusion", corrector="none"
            )
        )
        with pytest.raises(AssertionError):
            assert_matches_mixture(sample(jax.random.key(1)).x)


def pc_settings(sde_name: str, predictor: str, corrector: str) -> dict:
    """Sampler settings for one combination, following the paper where it applies.

    With a predictor, the corrector only polishes: the paper's snr is 0.16 for VE and 0.01 for
    VP/sub-VP, one corrector step per time step, ``N = 1000``.

    Corrector-only runs must carry the chain from the prior to the data by Langevin dynamics
    alone, so they need the chain to keep up with ``p_t`` as ``t`` decreases:

    * A Langevin step with ``step = 2 snr^2 (||z|| / ||score||)^2`` moves a Gaussian's variance a
      fraction ``~2 snr^2`` of the way to equilibrium. At VP's snr 0.01 that is 2e-4 per step,
      far too slow over 1000 steps, so we use snr 0.16 for every SDE: 5% per step, while the
      stationary variance bias of unadjusted Langevin, ``~snr^2 = 2.6%``, stays below the
      ~3.5% resolution of a component's variance here. Two steps per time step halve the lag.
    * ALD's step is ``2 (snr sigma_t)^2``, which shrinks relative to the spread of ``p_t`` as
      ``t -> 0``; for VE its variance lags by ``~ln(sigma_max/sigma_min) / (2 N snr^2 n_steps)``,
      17% for one step per time step, so we take 8 (2%), which also serves VP.
    """
    if predictor != "none":
        return {"snr": 0.16 if sde_name == "vesde" else 0.01, "n_steps": 1}
    return {"snr": 0.16, "n_steps": 2 if corrector == "langevin" else 8}


COMBINATIONS = [
    (sde_name, predictor, corrector)
    for sde_name in SDE_NAMES
    for predictor in PREDICTORS
    for corrector in CORRECTORS
    if (predictor, corrector) != ("none", "none")
    # Corrector-only ALD cannot follow sub-VP's moving means; see the dedicated test below.
    and (sde_name, predictor, corrector) != ("subvpsde", "none", "ald")
]


def _marks(predictor):
    return [pytest.mark.slow] if predictor == "none" else []


@pytest.mark.parametrize(
    "sde_name,predictor,corrector",
    [pytest.param(*combo, marks=_marks(combo[1])) for combo in COMBINATIONS],
)
def test_pc_sampler_reproduces_mixture(sde_name, predictor, corrector):
    sde = get_sde(sde_name)
    settings = pc_settings(sde_name, predictor, corrector)
    sample = jax.jit(
        lambda key: pc_sample(
            sde,
            exact_score_fn(sde),
            key,
            (BATCH, 2),
            predictor=predictor,
            corrector=corrector,
            **settings,
        )
    )
    result = sample(jax.random.key(1))
    assert_matches_mixture(result.x)
    evals = int(predictor != "none") + int(corrector != "none") * settings["n_steps"]
    assert int(result.nfe) == sde.N * evals


@pytest.mark.slow
def test_subvp_ald_corrector_only_lags_behind_the_means():
    # ALD's step 2 (snr sigma_t)^2 uses sub-VP's kernel std sigma_t = 1 - exp(-B(t)) ~ beta_min t,
    # so near t = 0 the step falls like t^2 while the scale a_t of p_t's means still moves like
    # t. The chain cannot follow: its means stay contracted towards the origin (by ~3% here,
    # shrinking only like a small power of the step count). Weights and spreads are right.
    sde = get_sde("subvpsde")
    settings = pc_settings("subvpsde", "none", "ald")
    x = jax.jit(
        lambda key: pc_sample(
            sde, exact_score_fn(sde), key, (BATCH, 2), predictor="none", corrector="ald", **settings
        )
    )(jax.random.key(1)).x
    assert_matches_mixture(x, check_means=False)
    x = np.asarray(x)
    labels = np.argmax(np.asarray(MIXTURE.responsibilities(x)), axis=1)
    ratios = [np.linalg.norm(x[labels == k].mean(0)) / np.linalg.norm(MEANS[k]) for k in range(3)]
    assert all(r < 1 for r in ratios), ratios


@pytest.mark.parametrize(
    "sde_name,predictor", [("vesde", "ancestral_sampling"), ("vpsde", "ancestral_sampling")]
)
def test_pc_sampler_with_fewer_steps_than_sde_n(sde_name, predictor):
    # The discrete noise tables (SMLD sigmas, DDPM betas) must be rebuilt for the coarser grid:
    # reading the N = 1000 tables on a 500-point grid skips every other SMLD level and takes only
    # half of each DDPM step, which these checks reject by 20-70 standard errors.
    sde = get_sde(sde_name)
    result = jax.jit(
        lambda key: pc_sample(
            sde,
            exact_score_fn(sde),
            key,
            (BATCH, 2),
            predictor=predictor,
            corrector="none",
            num_steps=500,
        )
    )(jax.random.key(2))
    assert_matches_mixture(result.x)
    assert result.nfe == 500


@pytest.mark.parametrize(
    "sde_name,predictor",
    [("vesde", "reverse_diffusion"), ("vpsde", "euler_maruyama"), ("subvpsde", "euler_maruyama")],
)
def test_pc_probability_flow_predictor_reproduces_mixture(sde_name, predictor):
    # A deterministic Euler-type discretization of the probability-flow ODE: with 1000 steps its
    # O(1/N) bias is far below what 2000 samples resolve.
    sde = get_sde(sde_name)
    sample = lambda key, flow: pc_sample(
        sde,
        exact_score_fn(sde),
        key,
        (BATCH, 2),
        predictor=predictor,
        corrector="none",
        probability_flow=flow,
    )
    result = jax.jit(lambda key: sample(key, True))(jax.random.key(7))
    assert_matches_mixture(result.x)
    assert result.nfe == sde.N
    # Deterministic given x_T: it differs from the stochastic sampler from the same key.
    stochastic = jax.jit(lambda key: sample(key, False))(jax.random.key(7))
    assert float(jnp.max(jnp.abs(stochastic.x - result.x))) > 0.1


def test_probability_flow_rejects_ancestral_sampling():
    with pytest.raises(ValueError, match="no probability-flow form"):
        pc_sample(
            get_sde("vpsde"),
            lambda x, t: -x,
            jax.random.key(0),
            (4, 2),
            predictor="ancestral_sampling",
            corrector="none",
            probability_flow=True,
        )


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_ode_sampler_reproduces_mixture(sde_name, solver):
    sde = get_sde(sde_name)
    result = jax.jit(
        lambda key: ode_sample(sde, exact_score_fn(sde), key, (BATCH, 2), solver=solver)
    )(jax.random.key(3))
    assert_matches_mixture(result.x)


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_encode_decode_round_trip(sde_name):
    sde = get_sde(sde_name)
    score_fn = exact_score_fn(sde)
    x = MIXTURE.sample(jax.random.key(4), 1000)

    def round_trip(x, tol):
        z = encode(sde, score_fn, x, rtol=tol, atol=tol).x
        return z, decode(sde, score_fn, z, rtol=tol, atol=tol).x

    z, x_back = jax.jit(round_trip, static_argnums=1)(x, 1e-5)
    # The latents follow p_T = N(a_T m, a_T^2 C + sig_T^2 I) up to the (negligible, sig_T
    # dominates) non-Gaussianity: check its moments with the Gaussian standard errors.
    a_T, sig_T = (float(v[0]) for v in sde.marginal_coeffs(jnp.full((1,), sde.T)))
    cov_T = a_T**2 * MIXTURE.covariance() + sig_T**2 * np.eye(2)
    z = np.asarray(z, np.float64)
    n = len(z)
    z_mean = (z.mean(0) - a_T * MIXTURE.mean()) / np.sqrt(np.diag(cov_T) / n)
    cov_se = np.sqrt((np.outer(np.diag(cov_T), np.diag(cov_T)) + cov_T**2) / n)
    assert np.all(np.abs(z_mean) < Z), z_mean
    assert np.all(np.abs((np.cov(z.T) - cov_T) / cov_se) < Z), np.cov(z.T)

    # Step sizes are controlled on the RMS error over the whole batch, so the bulk of the points
    # comes back to within a few tolerances while the few whose latents sit near a boundary
    # between modes (where the flow stretches space) carry larger errors; all of it must shrink
    # with the tolerance.
    err = np.linalg.norm(np.asarray(x_back) - np.asarray(x), axis=1)
    assert np.median(err) < 10 * 1e-5, np.median(err)
    _, x_fine = jax.jit(round_trip, static_argnums=1)(x, 1e-6)
    err_fine = np.linalg.norm(np.asarray(x_fine) - np.asarray(x), axis=1)
    assert np.max(err_fine) < np.max(err) / 3, (np.max(err_fine), np.max(err))
    assert np.median(err_fine) < 10 * 1e-6, np.median(err_fine)


@pytest.mark.parametrize("solver", ["tsit5", "dopri5", "heun", "euler"])
def test_ode_nfe_counts_every_score_evaluation(solver):
    # Both directions; the 1%-of-interval first step and these tolerances make the controller
    # reject steps along the way (several per solve for this SDE), which the count must include.
    sde = get_sde("vpsde", N=200)
    score_fn, calls = counting(exact_score_fn(sde))
    x = MIXTURE.sample(jax.random.key(5), 64)
    runs = [
        lambda: ode_sample(sde, score_fn, jax.random.key(6), (64, 2), solver=solver, denoise=True),
        lambda: encode(sde, score_fn, x, solver=solver, rtol=1e-3, atol=1e-3),
    ]
    for run in runs:
        calls.clear()
        result = jax.jit(run)()
        jax.block_until_ready(result)
        jax.effects_barrier()
        assert int(result.nfe) == len(calls)
        assert int(result.nfe) > 0


@pytest.mark.parametrize(
    "predictor,corrector,n_steps",
    [
        ("euler_maruyama", "langevin", 2),
        ("ancestral_sampling", "ald", 3),
        ("none", "langevin", 2),
        ("reverse_diffusion", "none", 1),
    ],
)
def test_pc_nfe_counts_every_score_evaluation(predictor, corrector, n_steps):
    sde = get_sde("vpsde")
    score_fn, calls = counting(exact_score_fn(sde))
    result = jax.jit(
        lambda key: pc_sample(
            sde,
            score_fn,
            key,
            (8, 2),
            predictor=predictor,
            corrector=corrector,
            n_steps=n_steps,
            num_steps=25,
        )
    )(jax.random.key(7))
    jax.block_until_ready(result)
    jax.effects_barrier()
    assert isinstance(result.nfe, int) or result.nfe.shape == ()
    assert int(result.nfe) == len(calls)


def test_pc_sample_as_jit_with_static_arguments_matches_eager():
    sde = get_sde("vesde")
    score_fn = exact_score_fn(sde)
    kwargs = dict(predictor="reverse_diffusion", corrector="langevin", num_steps=50)
    jitted = jax.jit(
        pc_sample,
        static_argnums=(0, 1, 3),
        static_argnames=("predictor", "corrector", "n_steps", "denoise", "num_steps", "snr", "eps"),
    )
    key = jax.random.key(8)
    got = jitted(sde, score_fn, key, (16, 2), **kwargs)
    want = pc_sample(sde, score_fn, key, (16, 2), **kwargs)
    assert isinstance(want, SampleResult) and want.nfe == 100
    np.testing.assert_allclose(got.x, want.x, rtol=1e-5, atol=1e-5)


def test_ode_sample_jit_matches_eager_and_z_input():
    sde = get_sde("vpsde")
    score_fn = exact_score_fn(sde)
    key = jax.random.key(9)
    eager = ode_sample(sde, score_fn, key, (16, 2))
    jitted = jax.jit(lambda k: ode_sample(sde, score_fn, k, (16, 2)))(key)
    np.testing.assert_allclose(jitted.x, eager.x, rtol=1e-5, atol=1e-5)
    # Passing the prior sample explicitly is the same as drawing it from the key.
    z = sde.prior_sample(key, (16, 2))
    from_z = decode(sde, score_fn, z)
    np.testing.assert_allclose(from_z.x, eager.x, rtol=1e-5, atol=1e-5)


def test_pc_sample_sharded_batch_matches_unsharded():
    # The Langevin step size uses batch means; sharding the batch must not turn them into
    # per-device means.
    sde = get_sde("vesde")
    # Auto axes: the sampler's loop carry takes whatever sharding XLA propagates from the score.
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    score_fn = exact_score_fn(sde)

    def sharded_score_fn(x, t):
        return score_fn(jax.lax.with_sharding_constraint(x, sharding), t)

    def run(score_fn):
        return pc_sample(sde, score_fn, jax.random.key(10), (64, 2), num_steps=50).x

    plain = jax.jit(lambda: run(score_fn))()
    sharded = jax.jit(lambda: run(sharded_score_fn), out_shardings=sharding)()
    assert sharded.sharding.is_equivalent_to(sharding, 2)
    np.testing.assert_allclose(sharded, plain, rtol=1e-5, atol=1e-5)


def test_invalid_arguments_raise_value_errors():
    sde = get_sde("vpsde")
    score_fn = exact_score_fn(sde)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="reverse_diffusion"):
        pc_sample(sde, score_fn, key, (4, 2), predictor="leapfrog")
    with pytest.raises(ValueError, match="langevin"):
        pc_sample(sde, score_fn, key, (4, 2), corrector="hmc")
    with pytest.raises(ValueError, match="tsit5"):
        ode_sample(sde, score_fn, key, (4, 2), solver="rk4")
    with pytest.raises(ValueError, match="tsit5"):
        encode(sde, score_fn, jnp.zeros((4, 2)), solver="rk4")
    with pytest.raises(ValueError, match="shape"):
        ode_sample(sde, score_fn, key, (4, 2), z=jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="eps"):
        pc_sample(sde, score_fn, key, (4, 2), eps=2.0)
    with pytest.raises(ValueError, match="shape"):
        pc_sample(sde, score_fn, key, ())
    # DDPM's discrete betas beta_max / N reach 1 at N = 20 steps: a clear error instead of NaN.
    with pytest.raises(ValueError, match="num_steps > 20"):
        pc_sample(sde, score_fn, key, (4, 2), num_steps=20)
    with pytest.raises(ValueError, match="discrete betas"):
        pc_sample(get_sde("subvpsde"), score_fn, key, (4, 2), num_steps=10, predictor="none")
    x, _ = pc_sample(
        sde, score_fn, key, (4, 2), num_steps=10, predictor="euler_maruyama", corrector="none"
    )
    assert np.isfinite(np.asarray(x)).all()
    x, _ = pc_sample(sde, score_fn, key, (4, 2), num_steps=21)
    assert np.isfinite(np.asarray(x)).all()
