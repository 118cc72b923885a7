"""Plain and annealed Langevin dynamics (scoresde_jax.sampling.langevin) with exact scores.

Ground truth:

* A Gaussian ``N(mu, C)``: the unadjusted chain ``x <- x + (e/2) score + sqrt(e) z`` is linear, and
  along an eigenvector of ``C`` with eigenvalue ``c`` its stationary variance solves
  ``v = (1 - e / (2c))^2 v + e``, i.e. ``v = c / (1 - e / (4c))``: the target plus an ``O(e)`` bias.
* Gaussian mixtures (closed-form scores, ``tests/mixture_scores.py``): samples are assigned to
  components by their posterior responsibilities; the frequencies must match the weights within
  binomial error, and each component's mean and spread must match.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mixture_scores import counting, isotropic_score_fn
from train_utils import override

from configs.toy.default import get_default_config
from configs.toy.gmm_ve import get_config as gmm_ve_config
from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.sde import get_sde
from scoresde_jax.data import TOY_GMM
from scoresde_jax.run import experiment
from scoresde_jax.sampling import annealed_langevin_sample, annealed_noise_levels, langevin_sample


def _component_freqs(mixture: GaussianMixture, x):
    comp = np.asarray(mixture.responsibilities(jnp.asarray(x))).argmax(-1)
    return np.bincount(comp, minlength=mixture.num_components) / len(comp), comp


# ----------------------------------------------------------------------------------------------
# Noise levels.


def test_ve_levels_are_ncsn_geometric_sequence():
    sde = get_sde("vesde", sigma_min=0.01, sigma_max=50.0)
    t, sigma = annealed_noise_levels(sde, 10)
    np.testing.assert_allclose(sigma, np.geomspace(50.0, 0.01, 10), rtol=1e-5)
    np.testing.assert_allclose(t, np.linspace(1.0, 0.0, 10), atol=1e-6)


@pytest.mark.parametrize("name", ["vpsde", "subvpsde"])
def test_vp_levels_are_geometric_in_the_kernel_std(name):
    sde = get_sde(name)
    t, sigma = annealed_noise_levels(sde, 12)
    alpha_t, sigma_t = sde.marginal_coeffs(t)  # sigma is the kernel std at t_i
    np.testing.assert_allclose(sigma, sigma_t, rtol=1e-6)
    top = float(sde.marginal_coeffs(jnp.ones((1,)))[1][0])
    np.testing.assert_allclose(sigma, np.geomspace(top, 0.01, 12), rtol=2e-4)
    assert float(t[0]) == 1.0 and np.all(np.diff(np.asarray(t)) < 0) and float(t[-1]) > 0


def test_level_errors_name_the_range():
    with pytest.raises(ValueError, match="outside the noise levels"):
        annealed_noise_levels(get_sde("vesde", sigma_min=0.01), 5, sigma_min=0.001)
    with pytest.raises(ValueError, match="outside the noise levels"):
        annealed_noise_levels(get_sde("vpsde"), 5, sigma_min=1.5)
    with pytest.raises(ValueError, match="num_levels"):
        annealed_noise_levels(get_sde("vpsde"), 0)


# ----------------------------------------------------------------------------------------------
# Plain Langevin on a Gaussian: the O(step) bias of the unadjusted chain, exactly.


def test_plain_langevin_samples_a_gaussian_with_its_known_step_bias():
    mu = np.array([1.0, -0.5])
    cov = np.array([[1.5, 0.4], [0.4, 0.35]])
    gauss = GaussianMixture(np.ones(1), mu[None], cov[None])
    sde = get_sde("vesde", sigma_min=0.01, sigma_max=5.0)
    step, t, n = 0.2, 1e-3, 4_000
    run = jax.jit(
        lambda k: langevin_sample(
            sde, gauss.score_fn(sde), k, (n, 2), step_size=step, n_steps=300, t=t
        )
    )
    res = run(jax.random.key(0))
    assert res.nfe == 300
    x = np.asarray(res.x, np.float64)
    # The chain targets p_t: the data plus the kernel's sigma_t^2 I.
    sigma_t = float(sde.marginal_coeffs(jnp.full((1,), t))[1][0])
    c_t = cov + sigma_t**2 * np.eye(2)
    lam, vecs = np.linalg.eigh(c_t)
    proj = (x - x.mean(0)) @ vecs
    var = proj.var(0)
    stationary = lam / (1 - step / (4 * lam))
    se = stationary * np.sqrt(2.0 / n)  # std error of a sample variance
    assert np.all(np.abs(var - stationary) < 4 * se), (var, stationary, se)
    # The bias is visible: along the narrow direction it is ~14 standard errors.
    assert np.abs(var[0] - lam[0]) > 8 * se[0], (var, lam, se)
    np.testing.assert_allclose(x.mean(0), mu, atol=4 * np.sqrt(stationary.max() / n))
    # One covariance entry checked directly, too: the cross term of the stationary covariance.
    cov_stat = vecs @ np.diag(stationary) @ vecs.T
    assert abs(np.cov(x.T)[0, 1] - cov_stat[0, 1]) < 4 * np.sqrt(
        (cov_stat[0, 0] * cov_stat[1, 1] + cov_stat[0, 1] ** 2) / n
    )


# ----------------------------------------------------------------------------------------------
# Annealed Langevin on mixtures.


@pytest.mark.parametrize("name", ["vesde", "vpsde", "subvpsde"])
def test_annealed_langevin_samples_the_toy_mixture(name):
    """The 8-component toy mixture (unequal weights), sampled as ``--config.sampling.method=
    annealed_langevin`` does with the toy configs' SDEs and Langevin defaults."""
    config = override(
        get_default_config(), {"training.sde": name, "sampling.method": "annealed_langevin"}
    )
    sde = experiment.sde_from_config(config)
    sample = experiment.sampler_from_config(config.sampling, sde)
    std = float(np.sqrt(TOY_GMM.covs[0, 0, 0]))
    score_fn = isotropic_score_fn(sde, TOY_GMM.weights, TOY_GMM.means, np.full(8, std))
    n = 4_000
    res = jax.jit(lambda k: sample(score_fn, k, (n, 2)))(jax.random.key(1))
    assert res.nfe == 10 * 100 + 1
    x = np.asarray(res.x, np.float64)
    freq, comp = _component_freqs(TOY_GMM, x)
    se = np.sqrt(TOY_GMM.weights * (1 - TOY_GMM.weights) / n)
    assert np.all(np.abs(freq - TOY_GMM.weights) < 4 * se), (freq, TOY_GMM.weights)
    resid = x - TOY_GMM.means[comp]
    for k in range(8):
        rk = resid[comp == k]
        # Means within 4 standard errors; per-component spread within 5 standard errors of a
        # sample std (std / sqrt(2 n_k), 0.006 for the lightest components).
        np.testing.assert_allclose(rk.mean(0), 0.0, atol=4 * std / np.sqrt(len(rk)))
        np.testing.assert_allclose(rk.std(0), std, atol=5 * std / np.sqrt(2 * len(rk)))
    # Pooled over the components the variance is that of the data within 5 % (measured +1-2 %:
    # the last level's small step bias; its std error is 1.6 %).
    assert abs(np.mean(resid**2) / std**2 - 1) < 0.05, np.mean(resid**2) / std**2


def _two_modes():
    """Two far-apart modes with weights 0.8 / 0.2: no Langevin chain crosses between them."""
    weights, means, std = np.array([0.8, 0.2]), np.array([[-4.0, 0.0], [4.0, 0.0]]), 0.5
    return GaussianMixture.isotropic(weights, means, std), (weights, means, np.full(2, std))


def test_plain_langevin_gets_mixture_weights_wrong_and_annealed_gets_them_right():
    """Song & Ermon (2019), Sec. 3.2 and Fig. 3: Langevin dynamics with the exact score keeps the
    chains in the basin where they start, so the modes' relative weights are lost; annealing
    through large noise levels restores them. Both use 2000 score evaluations."""
    mixture, params = _two_modes()
    sde = get_sde("vesde", sigma_min=0.01, sigma_max=10.0)
    score_fn = isotropic_score_fn(sde, *params)
    n = 2_000
    plain = jax.jit(
        lambda k: (
            langevin_sample(
                sde,
                score_fn,
                k,
                (n, 2),
                step_size=0.01,
                n_steps=2000,
                init="uniform",
                init_range=(-8.0, 8.0),
            ).x
        )
    )(jax.random.key(2))
    annealed = jax.jit(
        lambda k: (
            annealed_langevin_sample(
                sde,
                score_fn,
                k,
                (n, 2),
                num_levels=20,
                n_steps_each=100,
                step_size=5e-5,
                init="uniform",
                init_range=(-8.0, 8.0),
            ).x
        )
    )(jax.random.key(3))
    se = np.sqrt(0.8 * 0.2 / n)  # 0.009
    plain_freq, plain_comp = _component_freqs(mixture, plain)
    annealed_freq, _ = _component_freqs(mixture, annealed)
    # Plain: the uniform start splits the chains about evenly (measured 0.50 / 0.50).
    assert abs(plain_freq[0] - 0.8) > 0.2, plain_freq
    assert abs(plain_freq[0] - 0.5) < 4 * np.sqrt(0.25 / n), plain_freq
    # ... while inside each mode the samples are right: plain Langevin mixes locally.
    np.testing.assert_allclose(np.asarray(plain)[plain_comp == 1].std(0), 0.5, rtol=0.1)
    # Annealed: the weights, up to a small deficit of the heavy mode. The chains stop crossing
    # between the modes at a level where the modes still overlap a little, which freezes the split
    # slightly off 0.8; more levels shrink it (measured, 4000 chains, three seeds each: mean
    # 0.773 with L = 10, 0.788 with L = 20, 0.790-0.793 with L = 20 and 300 steps per level,
    # whatever the step size), while plain Langevin is off by 0.3.
    assert abs(annealed_freq[0] - 0.8) < max(4 * se, 0.035), annealed_freq


# ----------------------------------------------------------------------------------------------
# Loop mechanics and configuration.


def test_annealed_langevin_counts_evaluations_and_is_reproducible():
    sde = get_sde("vpsde")
    mixture, params = _two_modes()
    counted, calls = counting(isotropic_score_fn(sde, *params))
    kwargs = dict(num_levels=3, n_steps_each=4, step_size=1e-4)
    res = annealed_langevin_sample(sde, counted, jax.random.key(4), (8, 2), **kwargs)
    jax.block_until_ready(res.x)
    assert res.nfe == len(calls) == 3 * 4 + 1
    again = jax.jit(lambda k: annealed_langevin_sample(sde, counted, k, (8, 2), **kwargs).x)(
        jax.random.key(4)
    )
    np.testing.assert_allclose(again, res.x, rtol=1e-5, atol=1e-6)
    other = annealed_langevin_sample(sde, counted, jax.random.key(5), (8, 2), **kwargs).x
    assert not np.allclose(other, res.x)
    with pytest.raises(ValueError, match="init"):
        langevin_sample(
            sde, counted, jax.random.key(0), (8, 2), step_size=1e-3, n_steps=1, init="gaussian"
        )


@pytest.mark.parametrize("method,nfe", [("annealed_langevin", 3 * 5 + 1), ("langevin", 15 + 1)])
def test_config_methods(method, nfe):
    config = override(
        get_default_config(),
        {
            "training.sde": "vesde",
            "sampling.method": method,
            "sampling.langevin_num_levels": 3,
            "sampling.langevin_steps_each": 5,
        },
    )
    sde = experiment.sde_from_config(config)
    sample = experiment.sampler_from_config(config.sampling, sde)
    mixture, params = _two_modes()
    res = sample(isotropic_score_fn(sde, *params), jax.random.key(6), (4, 2))
    assert res.nfe == nfe and res.x.shape == (4, 2) and np.all(np.isfinite(res.x))
    config.sampling.method = "langevinn"
    with pytest.raises(ValueError, match="annealed_langevin"):
        experiment.sampler_from_config(config.sampling, sde)


# ----------------------------------------------------------------------------------------------
# End to end: train the toy mixture with sliced / implicit score matching, sample from the CLI path.


@pytest.mark.slow
def test_toy_trained_with_ssm_and_ism_samples_with_annealed_langevin(tmp_path):
    from scoresde_jax.modes.evaluate import sample
    from scoresde_jax.run.trainer import train

    for loss in ("ssm", "ism"):
        config = override(
            gmm_ve_config(),
            {
                "training.loss": loss,
                "training.n_iters": 300,
                "training.batch_size": 256,
                "training.snapshot_freq": 300,
                "training.snapshot_freq_for_preemption": 300,
                "training.eval_freq": 300,
                "training.log_freq": 100,
                "training.snapshot_sampling": False,
                "training.progress_bar": False,
                "model.hidden": (128, 128),
                "model.ema_rate": 0.99,  # 300 steps: the default 0.999 would still remember init
                "optim.warmup": 50,
                "sampling.method": "annealed_langevin",
                "sampling.batch_size": 2_000,
            },
        )
        workdir = tmp_path / loss
        train(config, str(workdir))
        rows = [json.loads(r) for r in (workdir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if "loss" in r] == [100, 200, 300]
        out = sample(config, str(workdir))  # what --mode sample runs
        assert out["nfe"] == 10 * 100 + 1 and pathlib.Path(out["png"]).exists()
        x = np.load(out["npz"])["samples"]
        freq, _ = _component_freqs(TOY_GMM, x)
        # 300 steps give rough weights. Measured: max error 0.10 (ssm), 0.11 (ism); the heavier
        # half of the components (true weight 0.7) holds 0.83. Ignoring the weights would give
        # 0.5 there; a collapsed sampler a max error near 0.7.
        assert np.abs(freq - TOY_GMM.weights).max() < 0.16, (loss, freq)
        assert 0.6 < freq[4:].sum() < 0.92, (loss, freq)
        assert np.all(freq > 0.01), (loss, freq)
