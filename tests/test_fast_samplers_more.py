"""DPM-Solver++(3M), singlestep and adaptive DPM-Solver, and the adaptive reverse SDE, against
closed-form ground truth.

* Convergence orders are measured in float64 (``jax.enable_x64``): in float32 the round-off
  floor (~1e-5 after a solve) flattens the error curves of the third-order methods before
  their asymptotic rate shows. Singlestep DPM-Solver-k is compared with the exact flow map of a
  single Gaussian (tests/test_fast_samplers.py), 3M and DPM-Solver-3 also on a 3-component
  mixture against the same solver with many steps. On the Gaussian, 3M converges at fourth
  order (the leading third-order error term cancels for this linear flow), so there it is only
  required to be at least third order.
* The adaptive DPM-Solver is compared with a 1000-step 3M solution from the same prior sample,
  the adaptive reverse SDE with a much tighter solve on the same Brownian path (same key, same
  virtual Brownian tree); both must follow their tolerance, and their reported NFE must be the
  number of score evaluations that ran.
* Sample quality: on the toy 2-D mixture (8 narrow components) every sampler, at the NFE that
  BENCHMARKS.md documents for it, must be as close to exact samples as the 1000-step PC sampler
  (sliced Wasserstein distance and component weights), within three standard deviations of the
  metric's own sampling noise, which the test measures from independent exact sample sets. The
  same runs check that the reported NFE is the number of score evaluations that ran (for the
  fixed budgets: also the budget itself, lower-order final steps and DPM-Solver-fast splits
  included).
* Every new ``config.sampling.method`` runs through ``experiment.sampler_from_config`` on VE, VP
  and sub-VP.
"""

from __future__ import annotations

import functools
import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mixture_scores import counting, isotropic_score_fn
from test_fast_samplers import GAUSS_MEAN, GAUSS_STD, observed_slopes

from configs.toy.gmm import get_config
from scoresde_jax.core.sde import get_sde
from scoresde_jax.data import TOY_GMM
from scoresde_jax.metrics.sample_distance import random_directions, sliced_wasserstein, weight_error
from scoresde_jax.run import experiment
from scoresde_jax.sampling import (
    dpm_solver_adaptive_sample,
    dpm_solver_pp_sample,
    dpm_solver_sample,
    edm_sample,
    pc_sample,
    sde_adaptive_sample,
)
from scoresde_jax.sampling.fast import dpm_solver_fast_orders

WEIGHTS = np.array([0.2, 0.3, 0.5])
MEANS = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, 0.0]])
STDS = np.array([0.3, 0.4, 0.5])
EPS = 1e-3
SLOPE_TOL = 0.35


def mixture_score_fn(sde):
    return isotropic_score_fn(sde, WEIGHTS, MEANS, STDS)


def gaussian_score_fn(sde):
    return isotropic_score_fn(sde, [1.0], GAUSS_MEAN[None], [GAUSS_STD])


def toy_score_fn(sde):
    return isotropic_score_fn(sde, TOY_GMM.weights, TOY_GMM.means, [0.12] * 8)


def toy_labels(x):
    """Most likely component of each point (the toy components share one std, 0.12)."""
    x = np.asarray(x, np.float64)
    d2 = np.sum((x[:, None, :] - TOY_GMM.means[None]) ** 2, axis=-1)
    return np.argmax(np.log(TOY_GMM.weights)[None] - d2 / (2 * 0.12**2), axis=1)


def rms(a, b):
    return float(np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=-1))))


# --- convergence orders (float64) ----------------------------------------------------------


def exact_gaussian_end(sde, z):
    """``x(eps)`` of the probability flow of ``N(mu, c^2 I)`` from ``x(T) = z``, in float64:
    ``y - mu`` scales by ``sqrt((c^2 + sigma^2) / (c^2 + sigma_T^2))`` and ``x = s y``."""
    c2 = GAUSS_STD**2
    s_max, s_end = (float(sde.noise_level(jnp.float64(t))) for t in (sde.T, EPS))
    scale_max, scale_end = (float(sde.scale_of_noise_level(jnp.float64(s))) for s in (s_max, s_end))
    y0 = np.asarray(z, np.float64) / scale_max
    y1 = GAUSS_MEAN + (y0 - GAUSS_MEAN) * math.sqrt((c2 + s_end**2) / (c2 + s_max**2))
    return scale_end * y1


def singlestep(order):
    """Plain DPM-Solver-``order``: ``n`` steps of that order, ``order * n`` evaluations."""
    return lambda sde, f, z, n: (
        dpm_solver_sample(sde, f, None, z.shape, nfe=order * n, order=order, fast=False, z=z).x
    )


def multistep_3m(sde, f, z, n):
    return dpm_solver_pp_sample(
        sde, f, None, z.shape, num_steps=n, order=3, lower_order_final=False, z=z
    ).x


def measured_slopes(sde_name, run, problem, steps, ref_steps=None, seed=1):
    with jax.enable_x64(True):
        sde = get_sde(sde_name)
        score_fn = gaussian_score_fn(sde) if problem == "gaussian" else mixture_score_fn(sde)
        z = jnp.asarray(sde.prior_sample(jax.random.key(seed), (64, 2)), jnp.float64)
        solve = jax.jit(lambda n: run(sde, score_fn, z, n), static_argnums=0)
        if problem == "gaussian":
            reference = exact_gaussian_end(sde, z)
        else:
            reference = np.asarray(solve(ref_steps))
        slopes, errors = observed_slopes(solve, steps, reference, robust=problem == "mixture")
    print(f"{sde_name} {problem} errors {errors} slopes {slopes}")
    return slopes, errors


def assert_order(slopes, errors, order):
    """The last (most asymptotic) slope is ``order``; earlier ones may be higher, as the
    higher-order error terms die out, but not lower."""
    assert abs(slopes[-1] - order) < SLOPE_TOL and min(slopes) > order - SLOPE_TOL, (
        f"slopes {slopes}, errors {errors}"
    )


@pytest.mark.parametrize("order, sde_name", [(1, "vesde"), (2, "subvpsde"), (3, "vpsde")])
def test_singlestep_order_on_a_gaussian(order, sde_name):
    slopes, errors = measured_slopes(sde_name, singlestep(order), "gaussian", (16, 32, 64))
    assert_order(slopes, errors, order)


@pytest.mark.parametrize(
    "method, sde_name",
    [("dpm_solver_pp_3m", "vesde"), ("dpm_solver_3", "subvpsde")],
)
def test_third_order_on_a_mixture(method, sde_name):
    run, ref_steps = {
        "dpm_solver_pp_3m": (multistep_3m, 2048),
        "dpm_solver_3": (singlestep(3), 512),
    }[method]
    slopes, errors = measured_slopes(
        sde_name, run, "mixture", (32, 64, 128), ref_steps=ref_steps, seed=2
    )
    assert_order(slopes, errors, 3)


def test_3m_converges_to_the_exact_gaussian_flow():
    slopes, errors = measured_slopes("vpsde", multistep_3m, "gaussian", (16, 32, 64))
    assert np.all(slopes > 3 - SLOPE_TOL), (slopes, errors)
    assert errors[-1] < 1e-4, errors


# --- step counts and bookkeeping ------------------------------------------------------------


@pytest.mark.parametrize("nfe", range(1, 13))
@pytest.mark.parametrize("order", (1, 2, 3))
def test_dpm_solver_fast_orders_spend_the_budget(nfe, order):
    orders = dpm_solver_fast_orders(nfe, order)
    assert sum(orders) == nfe and max(orders) <= order
    assert orders == sorted(orders, reverse=True)  # highest orders first
    if order == 3:  # Lu et al.: M = nfe // 3 + 1 steps
        assert len(orders) == nfe // 3 + 1


# --- adaptive DPM-Solver ------------------------------------------------------------------


@functools.cache
def reference_3m(sde_name):
    sde = get_sde(sde_name)
    z = sde.prior_sample(jax.random.key(2), (256, 2))
    score_fn = mixture_score_fn(sde)
    x = jax.jit(
        lambda: dpm_solver_pp_sample(sde, score_fn, None, z.shape, num_steps=1000, order=3, z=z).x
    )()
    return sde, z, np.asarray(x)


ADAPTIVE_TOLERANCES = ((0.1, 0.01), (0.01, 0.001), (0.001, 0.0001))


@pytest.mark.parametrize("sde_name, order", [("vpsde", 2), ("vesde", 3)])
def test_dpm_solver_adaptive_follows_its_tolerance(sde_name, order):
    sde, z, reference = reference_3m(sde_name)
    score_fn, calls = counting(mixture_score_fn(sde))
    solve = jax.jit(
        lambda rtol, atol: dpm_solver_adaptive_sample(
            sde, score_fn, None, z.shape, order=order, rtol=rtol, atol=atol, z=z
        )
    )
    errors, nfes = [], []
    for rtol, atol in ADAPTIVE_TOLERANCES:
        calls.clear()
        result = solve(rtol, atol)
        jax.block_until_ready(result.x)
        jax.effects_barrier()
        assert int(result.nfe) == len(calls), (int(result.nfe), len(calls))
        errors.append(rms(result.x, reference))
        nfes.append(int(result.nfe))
    print(sde_name, order, "errors", errors, "nfe", nfes)
    # The global error stays below the (local, per step) relative tolerance and falls with it.
    assert all(
        err < 0.5 * rtol for err, (rtol, _) in zip(errors, ADAPTIVE_TOLERANCES, strict=True)
    ), errors
    assert errors[0] > 3 * errors[1] > 9 * errors[2], errors
    assert nfes[0] < nfes[1] < nfes[2], nfes


def test_dpm_solver_23_beats_the_uniform_grid_at_equal_nfe():
    sde, z, reference = reference_3m("vpsde")
    score_fn = mixture_score_fn(sde)
    adaptive = jax.jit(
        lambda: dpm_solver_adaptive_sample(
            sde, score_fn, None, z.shape, order=3, rtol=0.01, atol=0.001, z=z
        )
    )()
    nfe = int(adaptive.nfe)
    fixed = jax.jit(lambda: dpm_solver_sample(sde, score_fn, None, z.shape, nfe=nfe, z=z).x)()
    err_adaptive, err_fixed = rms(adaptive.x, reference), rms(fixed, reference)
    print("nfe", nfe, "adaptive", err_adaptive, "DPM-Solver-fast", err_fixed)
    assert err_adaptive < 0.5 * err_fixed


# --- adaptive reverse SDE -----------------------------------------------------------------


def test_sde_adaptive_strong_error_follows_the_tolerance():
    sde = get_sde("vpsde")
    score_fn, calls = counting(mixture_score_fn(sde))
    solve = jax.jit(
        lambda tol: sde_adaptive_sample(
            sde, score_fn, jax.random.key(3), (64, 2), rtol=tol, atol=tol, max_steps=20_000
        )
    )
    tight = solve(3e-4)
    errors, nfes = [], []
    for tol in (0.1, 0.03, 0.01):
        calls.clear()
        result = solve(tol)
        jax.block_until_ready(result.x)
        jax.effects_barrier()
        assert int(result.nfe) == len(calls), (int(result.nfe), len(calls))
        dist = np.linalg.norm(np.asarray(result.x) - np.asarray(tight.x), axis=-1)
        # The median: a few paths near a boundary between modes can end in another mode.
        errors.append(float(np.median(dist)))
        nfes.append(int(result.nfe))
        assert errors[-1] < tol, (tol, errors)
    print("median strong errors", errors, "nfe", nfes, "tight nfe", int(tight.nfe))
    assert errors[0] > errors[1] > errors[2] and nfes[0] < nfes[1] < nfes[2]


def test_bad_arguments():
    sde = get_sde("vpsde")
    score_fn = mixture_score_fn(sde)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="order"):
        dpm_solver_sample(sde, score_fn, key, (4, 2), order=4)
    with pytest.raises(ValueError, match="multiple"):
        dpm_solver_sample(sde, score_fn, key, (4, 2), nfe=10, order=3, fast=False)
    with pytest.raises(ValueError, match="nfe"):
        dpm_solver_sample(sde, score_fn, key, (4, 2), nfe=0)
    with pytest.raises(ValueError, match="order"):
        dpm_solver_adaptive_sample(sde, score_fn, key, (4, 2), order=1)
    with pytest.raises(ValueError, match="rtol"):
        dpm_solver_adaptive_sample(sde, score_fn, key, (4, 2), rtol=-1.0)
    with pytest.raises(ValueError, match="solver"):
        sde_adaptive_sample(sde, score_fn, key, (4, 2), solver="euler")
    with pytest.raises(ValueError, match="eps"):
        sde_adaptive_sample(sde, score_fn, key, (4, 2), eps=2.0)


# --- sample quality on the toy mixture at the documented NFE ---------------------------------

QUALITY_N = 4000


def config_sampler(sde, method, **fields):
    config = get_config()
    config.sampling.method = method
    for name, value in fields.items():
        config.sampling[name] = value
    return experiment.sampler_from_config(config.sampling, sde)


def pc_config(num_steps, predictor="reverse_diffusion", corrector="none"):
    return lambda sde: config_sampler(
        sde, "pc", predictor=predictor, corrector=corrector, snr=0.16, num_steps=num_steps
    )


# The 2-D column of the table in BENCHMARKS.md ("Samplers on Gaussian mixtures"): the smallest
# NFE at which each sampler matched the 1000-step PC sampler on this mixture with n = 10,000.
# name -> (make(sde) -> sample(score_fn, key, shape), the NFE it must report or None).
QUALITY_SAMPLERS = {
    "pc_reverse_diffusion": (pc_config(35), 35),
    "pc_euler_maruyama": (pc_config(35, predictor="euler_maruyama"), 35),
    "pc_langevin": (pc_config(50, corrector="langevin"), 100),
    "edm_heun": (lambda sde: config_sampler(sde, "edm", num_steps=18), 35),
    "edm_churn": (
        lambda sde: functools.partial(
            edm_sample, sde, num_steps=25, churn=10.0, s_tmin=0.05, s_tmax=50.0
        ),
        49,
    ),
    "dpm_solver_pp_2m": (
        lambda sde: config_sampler(sde, "dpm_solver_pp", num_steps=20, dpm_order=2),
        20,
    ),
    "dpm_solver_pp_3m": (
        lambda sde: config_sampler(sde, "dpm_solver_pp", num_steps=10, dpm_order=3),
        10,
    ),
    "dpm_solver_1": (lambda sde: config_sampler(sde, "dpm_solver", num_steps=35, dpm_order=1), 35),
    "dpm_solver_2": (lambda sde: config_sampler(sde, "dpm_solver", num_steps=20, dpm_order=2), 20),
    "dpm_solver_3": (lambda sde: config_sampler(sde, "dpm_solver", num_steps=20, dpm_order=3), 20),
    # Adaptive ones at the config defaults (rtol 0.05, atol 0.0078 / 0.05).
    "dpm_solver_adaptive_12": (
        lambda sde: config_sampler(sde, "dpm_solver_adaptive", dpm_order=2),
        None,
    ),
    "dpm_solver_adaptive_23": (
        lambda sde: config_sampler(sde, "dpm_solver_adaptive", dpm_order=3),
        None,
    ),
    "sde_adaptive": (lambda sde: config_sampler(sde, "sde_adaptive"), None),
    "ode_tsit5": (lambda sde: config_sampler(sde, "ode", rtol=1e-2, atol=1e-2), None),
}


@pytest.fixture(scope="module")
def toy_quality():
    """Exact samples, fixed projections, the metrics' noise floor and the PC-1000 reference."""
    sde = get_sde("vpsde")
    exact = TOY_GMM.sample(jax.random.key(10), QUALITY_N)
    directions = random_directions(0, 128, 2)

    def metrics(x):
        labels = toy_labels(x)
        return float(sliced_wasserstein(x, exact, directions)), weight_error(
            labels, TOY_GMM.weights
        )

    floor = [metrics(TOY_GMM.sample(jax.random.key(100 + r), QUALITY_N)) for r in range(8)]
    pc = jax.jit(
        lambda key: (
            pc_sample(
                sde,
                toy_score_fn(sde),
                key,
                (QUALITY_N, 2),
                predictor="reverse_diffusion",
                corrector="none",
                num_steps=1000,
            ).x
        )
    )
    reference = [metrics(pc(jax.random.key(20)))]
    sd = [statistics.stdev(m[i] for m in floor) for i in range(2)]
    limits = [statistics.mean(m[i] for m in reference) + 3 * sd[i] for i in range(2)]
    print("floor", floor, "reference", reference, "limits", limits)
    return sde, metrics, limits


@pytest.mark.parametrize("name", list(QUALITY_SAMPLERS))
def test_reaches_pc_1000_quality_at_the_documented_nfe(toy_quality, name):
    sde, metrics, (sw_limit, tv_limit) = toy_quality
    make, nfe = QUALITY_SAMPLERS[name]
    sample = make(sde)
    score_fn, calls = counting(toy_score_fn(sde))
    result = jax.jit(lambda key: sample(score_fn, key, (QUALITY_N, 2)))(jax.random.key(30))
    jax.block_until_ready(result.x)
    jax.effects_barrier()
    assert int(result.nfe) == len(calls) and (nfe is None or int(result.nfe) == nfe)
    sw, tv = metrics(result.x)
    print(name, "nfe", int(result.nfe), "sw", sw, "tv", tv)
    assert sw <= sw_limit and tv <= tv_limit, (sw, sw_limit, tv, tv_limit)


# --- every new method from the config, on every SDE ------------------------------------------

# sub-VP's sigma(eps) is ~100x smaller than VP's (sigma ~ B(t) rather than sqrt(B(t)) near 0),
# so a grid uniform in lambda spends about a third of its steps below any noise level that
# matters here; 35 evaluations cover both SDEs.
CONFIG_METHODS = {
    "dpm_solver_pp": {"num_steps": 35, "dpm_order": 3},
    "dpm_solver": {"num_steps": 35, "dpm_order": 3},
    "dpm_solver_adaptive": {"dpm_order": 3},
    "sde_adaptive": {},
}


@pytest.mark.parametrize("method", list(CONFIG_METHODS))
@pytest.mark.parametrize("sde_name", ("vesde", "subvpsde"))
def test_new_methods_from_config(sde_name, method):
    # VP runs through the same path in the quality test above.
    sde = get_sde(sde_name)
    sample = config_sampler(sde, method, **CONFIG_METHODS[method])
    n = 2000
    x = jax.jit(lambda key: sample(toy_score_fn(sde), key, (n, 2)).x)(jax.random.key(0))
    labels = toy_labels(x)
    freq = np.bincount(labels, minlength=TOY_GMM.num_components) / n
    stderr = np.sqrt(TOY_GMM.weights * (1 - TOY_GMM.weights) / n)
    assert np.all(np.abs(freq - TOY_GMM.weights) < 5 * stderr), (freq, TOY_GMM.weights)
    # Every component keeps its width (0.12), so no sampler collapses or blurs the modes.
    for k in range(TOY_GMM.num_components):
        spread = np.asarray(x)[labels == k].std(axis=0)
        np.testing.assert_allclose(spread, 0.12, rtol=0.2)
    assert math.isfinite(float(np.sum(x)))
