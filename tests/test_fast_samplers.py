"""Fast probability-flow samplers (EDM Heun, DPM-Solver++) against closed-form ground truth.

* For a single Gaussian ``N(mu, c^2 I)`` the scaled variable ``y = x / s`` follows
  ``dy/dsigma = sigma (y - mu) / (c^2 + sigma^2)``, so the flow map is linear and exact:
  ``y(sigma_1) - mu = (y(sigma_0) - mu) sqrt((c^2 + sigma_1^2) / (c^2 + sigma_0^2))``. The
  convergence order of each solver is measured against it.
* For a 2-D Gaussian mixture the reference is the same solver with many steps, from the same
  prior sample (so the same ``y`` at ``sigma_max``) to the same final noise level.
* With the exact mixture score, a few dozen evaluations must reproduce the mixture's component
  weights within sampling error.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mixture_scores import counting, isotropic_score_fn

from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.sde import get_sde
from scoresde_jax.sampling._common import SampleResult
from scoresde_jax.sampling.fast import (
    dpm_solver_pp_sample,
    edm_sample,
    make_denoiser,
)

SDE_NAMES = ("vesde", "vpsde", "subvpsde")
WEIGHTS = np.array([0.2, 0.3, 0.5])
MEANS = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, 0.0]])
STDS = np.array([0.3, 0.4, 0.5])
MIXTURE = GaussianMixture.isotropic(WEIGHTS, MEANS, STDS)
GAUSS_MEAN = np.array([1.0, -0.5])
GAUSS_STD = 0.5
Z = 5.0

# Each method: (sampler with its options, expected order, step counts in the asymptotic regime).
# DPM-Solver++(2M) reaches its asymptotic rate later than Heun: its first step is first order
# and the steps in lambda are long when there are few of them.
METHODS = {
    "heun": (functools.partial(edm_sample), 2, (16, 32, 64)),
    "euler": (functools.partial(edm_sample, second_order=False), 1, (16, 32, 64)),
    "dpm_solver_pp_2m": (
        functools.partial(dpm_solver_pp_sample, lower_order_final=False),
        2,
        (32, 64, 128),
    ),
    "ddim": (functools.partial(dpm_solver_pp_sample, order=1), 1, (16, 32, 64)),
}
SLOPE_TOL = 0.35


def mixture_score_fn(sde):
    return isotropic_score_fn(sde, WEIGHTS, MEANS, STDS)


def gaussian_score_fn(sde):
    return isotropic_score_fn(sde, [1.0], GAUSS_MEAN[None], [GAUSS_STD])


def sigma_at(sde, t):
    return float(sde.noise_level(jnp.float32(t)))


def exact_gaussian_flow(sde, method, z):
    """The exact result of ``method`` for the single Gaussian up to its time discretization.

    EDM's last step (Euler to ``sigma = 0``) returns ``D(y; sigma_min)``, which is a fixed map
    of the state at ``sigma_min``, so the reference integrates exactly to ``sigma_min`` and then
    applies the same map; DPM-Solver++ ends at ``eps`` and returns ``s(eps) y``.
    """
    z = np.asarray(z, np.float64)
    c2 = GAUSS_STD**2
    s_max = sigma_at(sde, sde.T)
    y0 = z / float(sde.scale_of_noise_level(jnp.float32(s_max)))
    if method in ("heun", "euler"):
        s_end = sde.sigma_min if sde.name == "vesde" else sigma_at(sde, 1e-3)
        y1 = GAUSS_MEAN + (y0 - GAUSS_MEAN) * math.sqrt((c2 + s_end**2) / (c2 + s_max**2))
        return GAUSS_MEAN + (y1 - GAUSS_MEAN) * c2 / (c2 + s_end**2)
    s_end = sigma_at(sde, 1e-3)
    y1 = GAUSS_MEAN + (y0 - GAUSS_MEAN) * math.sqrt((c2 + s_end**2) / (c2 + s_max**2))
    return float(sde.scale_of_noise_level(jnp.float32(s_end))) * y1


def observed_slopes(run, steps, reference, *, robust=False):
    """log2 ratios of the errors at successive step counts (2x apart).

    The error is the root-mean-square distance to ``reference``, or with ``robust`` the median
    over points of the distance: a point near the boundary between two modes can land in either
    until the steps are very small, which would hide the rate of all the others.
    """
    errors = []
    for n in steps:
        dist = np.linalg.norm(np.asarray(run(n), np.float64) - reference, axis=-1)
        errors.append(np.median(dist) if robust else np.sqrt(np.mean(dist**2)))
    errors = np.array(errors)
    return np.log2(errors[:-1] / errors[1:]), errors


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_sigma_time_change_of_variables(sde_name):
    sde = get_sde(sde_name)
    t = jnp.linspace(1e-3, sde.T, 101)
    sigma = sde.noise_level(t)
    alpha, std = sde.marginal_coeffs(t)
    np.testing.assert_allclose(sde.time_of_noise_level(sigma), t, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sde.scale_of_noise_level(sigma), alpha, rtol=1e-4)
    np.testing.assert_allclose(sde.scale_of_noise_level(sigma) * sigma, std, rtol=1e-4)
    assert np.all(np.diff(np.asarray(sigma)) > 0)


@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_denoiser_is_the_posterior_mean(sde_name):
    # For N(mu, c^2 I) data, E[y_0 | y] = mu + c^2 / (c^2 + sigma^2) (y - mu).
    sde = get_sde(sde_name)
    denoise = jax.jit(make_denoiser(sde, gaussian_score_fn(sde)))
    y = 3.0 * jax.random.normal(jax.random.key(0), (16, 2))
    for sigma in (0.05, 1.0, 20.0):
        want = GAUSS_MEAN + GAUSS_STD**2 / (GAUSS_STD**2 + sigma**2) * (np.asarray(y) - GAUSS_MEAN)
        np.testing.assert_allclose(denoise(y, sigma), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_convergence_order_on_a_gaussian(sde_name, method):
    sde = get_sde(sde_name)
    sampler, order, steps = METHODS[method]
    score_fn = gaussian_score_fn(sde)
    z = sde.prior_sample(jax.random.key(1), (64, 2))
    run = jax.jit(
        lambda n: sampler(sde, score_fn, None, z.shape, num_steps=n, z=z).x, static_argnums=0
    )
    slopes, errors = observed_slopes(run, steps, exact_gaussian_flow(sde, method, z))
    print(f"{sde_name} {method} errors {errors} slopes {slopes}")
    np.testing.assert_allclose(slopes, order, atol=SLOPE_TOL, err_msg=f"errors {errors}")


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("sde_name", ("vesde", "vpsde"))
def test_convergence_order_on_a_mixture(sde_name, method):
    sde = get_sde(sde_name)
    sampler, order, steps = METHODS[method]
    score_fn = mixture_score_fn(sde)
    z = sde.prior_sample(jax.random.key(2), (64, 2))
    run = jax.jit(
        lambda n: sampler(sde, score_fn, None, z.shape, num_steps=n, z=z).x, static_argnums=0
    )
    reference = np.asarray(run(2048), np.float64)
    slopes, errors = observed_slopes(run, steps, reference, robust=True)
    print(f"{sde_name} {method} errors {errors} slopes {slopes}")
    np.testing.assert_allclose(slopes, order, atol=SLOPE_TOL, err_msg=f"errors {errors}")


def assert_mixture_weights(x):
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    assert np.all(np.isfinite(x)), "non-finite samples"
    labels = np.argmax(np.asarray(MIXTURE.responsibilities(jnp.asarray(x, jnp.float32))), axis=1)
    freq = np.bincount(labels, minlength=len(WEIGHTS)) / n
    z_weights = (freq - WEIGHTS) / np.sqrt(WEIGHTS * (1 - WEIGHTS) / n)
    assert np.all(np.abs(z_weights) < Z), f"weights {freq} vs {WEIGHTS}, z={z_weights}"
    # 20-35 evaluations leave a discretization bias of a few hundredths in the component means
    # and spreads (several standard errors at n = 4000), so those get an absolute tolerance.
    for k in range(len(WEIGHTS)):
        xk = x[labels == k]
        np.testing.assert_allclose(xk.mean(axis=0), MEANS[k], atol=0.15)
        np.testing.assert_allclose(xk.std(axis=0), STDS[k], rtol=0.15)


FEW_STEP_SAMPLERS = {
    "heun_18": functools.partial(edm_sample, num_steps=18),
    # Churn re-noises and so re-opens discretization error at every step; it needs more steps
    # than the deterministic sampler for the same accuracy (Karras et al., Section 4).
    "heun_32_churn": functools.partial(
        edm_sample, num_steps=32, churn=10.0, s_tmin=0.05, s_tmax=50.0
    ),
    "dpm_solver_pp_20": functools.partial(dpm_solver_pp_sample, num_steps=20),
}


@pytest.mark.parametrize("sampler", list(FEW_STEP_SAMPLERS))
@pytest.mark.parametrize("sde_name", SDE_NAMES)
def test_few_steps_reproduce_the_mixture(sde_name, sampler):
    sde = get_sde(sde_name)
    sample = jax.jit(
        lambda key: FEW_STEP_SAMPLERS[sampler](sde, mixture_score_fn(sde), key, (4000, 2))
    )
    result = sample(jax.random.key(3))
    assert_mixture_weights(result.x)


def test_checks_reject_a_wrong_distribution():
    sde = get_sde("vpsde")
    score_fn = isotropic_score_fn(sde, [0.3, 0.3, 0.4], MEANS, STDS)
    x = jax.jit(lambda key: edm_sample(sde, score_fn, key, (4000, 2)).x)(jax.random.key(3))
    with pytest.raises(AssertionError):
        assert_mixture_weights(x)


@pytest.mark.parametrize("num_steps", (1, 2, 5))
def test_nfe_counts(num_steps):
    sde = get_sde("vpsde")
    cases = [
        (functools.partial(edm_sample), 2 * num_steps - 1),
        (functools.partial(edm_sample, second_order=False), num_steps),
        (functools.partial(edm_sample, churn=5.0), 2 * num_steps - 1),
        (functools.partial(dpm_solver_pp_sample), num_steps),
        (functools.partial(dpm_solver_pp_sample, order=1), num_steps),
    ]
    for sampler, want in cases:
        score_fn, calls = counting(mixture_score_fn(sde))
        result = sampler(sde, score_fn, jax.random.key(0), (8, 2), num_steps=num_steps)
        jax.block_until_ready(result.x)
        jax.effects_barrier()
        assert isinstance(result, SampleResult)
        assert result.nfe == want == len(calls), (sampler, result.nfe, len(calls))
        assert result.x.shape == (8, 2) and np.all(np.isfinite(result.x))


@pytest.mark.parametrize("sampler", [edm_sample, dpm_solver_pp_sample])
def test_jit_matches_eager_and_is_deterministic(sampler):
    sde = get_sde("subvpsde")
    score_fn = mixture_score_fn(sde)
    key = jax.random.key(4)
    eager = sampler(sde, score_fn, key, (32, 2), num_steps=6)
    jitted = jax.jit(lambda k: sampler(sde, score_fn, k, (32, 2), num_steps=6))
    np.testing.assert_allclose(jitted(key).x, eager.x, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(jitted(key).x, jitted(key).x)
    assert not np.allclose(jitted(jax.random.key(5)).x, eager.x)


def test_churn_uses_the_key():
    sde = get_sde("vesde")
    score_fn = mixture_score_fn(sde)
    z = sde.prior_sample(jax.random.key(0), (16, 2))
    sample = jax.jit(lambda k: edm_sample(sde, score_fn, k, (16, 2), churn=10.0, z=z).x)
    assert not np.allclose(sample(jax.random.key(1)), sample(jax.random.key(2)))
    deterministic = jax.jit(lambda k: edm_sample(sde, score_fn, k, (16, 2), z=z).x)
    np.testing.assert_array_equal(deterministic(jax.random.key(1)), deterministic(None))


def test_bad_arguments():
    sde = get_sde("vpsde")
    score_fn = mixture_score_fn(sde)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_steps"):
        edm_sample(sde, score_fn, key, (4, 2), num_steps=0)
    with pytest.raises(ValueError, match="sigma_min"):
        edm_sample(sde, score_fn, key, (4, 2), sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="order"):
        dpm_solver_pp_sample(sde, score_fn, key, (4, 2), order=4)
    with pytest.raises(ValueError, match="eps"):
        dpm_solver_pp_sample(sde, score_fn, key, (4, 2), eps=0.0)
    with pytest.raises(ValueError, match="shape"):
        dpm_solver_pp_sample(sde, score_fn, None, (4, 2), z=jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="key"):
        edm_sample(sde, score_fn, None, (4, 2))
