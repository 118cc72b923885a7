"""Implicit and sliced score matching (scoresde_jax.core.score_matching) against closed forms.

Ground truth:

* Hand computations: for ``s(x) = tanh(W x + c)`` the Jacobian is ``diag(1 - tanh^2(u)) W``, so
  the objectives are written out in float64 numpy with the documented draws.
* Gaussian data ``x ~ N(mu, Sigma)`` and a linear score ``s(x) = A x + b``. Every objective is then
  quadratic in ``(A, b)`` (the trace term is linear), so one Newton step from zero, with the
  Hessian from autodiff, gives its exact minimizer for the drawn sample. For ISM,
  ``J = tr(A) + 1/2 mean_n ||A x_n + b||^2``:
  ``dJ/db = A mu_hat + b = 0`` and ``dJ/dA = I + mean_n (A x_n + b) x_n^T = I + A S_hat = 0``
  (using ``b = -A mu_hat``), with ``S_hat = mean_n (x_n - mu_hat)(x_n - mu_hat)^T``, hence
  ``A = -S_hat^-1`` and ``b = S_hat^-1 mu_hat``: the score of ``N(mu_hat, S_hat)``, which tends to
  the true ``-Sigma^-1``, ``Sigma^-1 mu``. Also ``E[ISM] = tr(A) + 1/2 (tr(A Sigma A^T) +
  ||A mu + b||^2)``, which SSM and SSM-VR share since ``E[v v^T] = I``.
* Perturbed Gaussian data: at time ``t`` the marginal is ``N(alpha mu, C_t)``,
  ``C_t = alpha^2 Sigma + sigma^2 I``, whose score is ``-C_t^-1 (x - alpha mu)``. For ``c``
  times it, ``E[tr(grad s) + 1/2 ||s||^2] = (c^2 / 2 - c) tr(C_t^-1)``, minimal at ``c = 1``.
"""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sde_reference as ref
from scipy import integrate
from train_utils import override

from scoresde_jax.core import losses
from scoresde_jax.core import score_matching as sm
from scoresde_jax.core.sde import get_sde, importance_sample_t
from scoresde_jax.run import experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
MU = np.array([0.5, -1.0, 2.0])
SIGMA = np.array([[1.0, 0.3, -0.2], [0.3, 0.5, 0.1], [-0.2, 0.1, 2.0]])


def _gaussian_samples(key, n, mu=MU, cov=SIGMA):
    chol = np.linalg.cholesky(cov)
    z = jax.random.normal(key, (n, len(mu)))
    return jnp.asarray(mu, jnp.float32)[None] + z @ jnp.asarray(chol.T, jnp.float32)


def _empirical(x):
    x = np.asarray(x, np.float64)
    mu = x.mean(0)
    return mu, (x - mu).T @ (x - mu) / len(x)


def _linear(theta, d):
    """``theta`` (flat, ``d^2 + d``) -> ``(A, b)``."""
    return theta[: d * d].reshape(d, d), theta[d * d :]


def _quadratic_minimizer(objective, n_params, x, key):
    """Exact minimizer of a quadratic ``objective(theta, x, key)`` (one Newton step from zero).

    ``x`` and ``key`` are arguments of the compiled functions, not constants: XLA:CPU's YNN reduce
    fusion in jax 0.10.2 miscompiles the gradient when the projections are folded into a large
    compile-time constant (which happens for a constant key).
    """
    zero = jnp.zeros((n_params,), jnp.float32)
    g = np.asarray(jax.jit(jax.grad(objective))(zero, x, key), np.float64)
    h = np.asarray(jax.jit(jax.hessian(objective))(zero, x, key), np.float64)
    return -np.linalg.solve(h, g)


# ----------------------------------------------------------------------------------------------
# Hand computations.

W = np.array([[0.8, -0.4, 0.3], [0.2, 1.1, -0.5], [-0.6, 0.1, 0.9]])
C = np.array([0.1, -0.2, 0.05])


def _tanh_score(xp):
    return lambda x: xp.tanh(x @ W.T.astype(x.dtype) + C.astype(x.dtype)[None])


def _tanh_jacobian(x):
    """``[B, D, D]`` Jacobians of ``tanh(W x + c)`` in float64."""
    u = x @ W.T + C
    return (1 - np.tanh(u) ** 2)[:, :, None] * W[None]


@pytest.mark.parametrize(
    "objective,noise,m",
    [
        ("ism", None, 0),
        ("ism_hutchinson", "gaussian", 4),
        ("ssm", "rademacher", 1),
        ("ssm", "gaussian", 3),
        ("ssm_vr", "gaussian", 2),
        ("ssm_vr", "rademacher", 3),
    ],
)
def test_objectives_match_hand_computation(objective, noise, m):
    x = jax.random.normal(jax.random.key(0), (64, 3))
    key = jax.random.key(1)
    f = _tanh_score(jnp)
    if objective == "ism":
        got = sm.implicit_score_matching(f, x)
    elif objective == "ism_hutchinson":
        got = sm.implicit_score_matching(f, x, key, exact_trace=False, num_probes=m, noise=noise)
    else:
        got = sm.sliced_score_matching(
            f, x, key, num_projections=m, noise=noise, variance_reduction=objective == "ssm_vr"
        )

    xn = np.asarray(x, np.float64)
    s = _tanh_score(np)(xn)
    jac = _tanh_jacobian(xn)
    if objective == "ism":
        expected = np.trace(jac, axis1=1, axis2=2) + 0.5 * (s**2).sum(-1)
    else:
        v = np.asarray(sm.PROJECTIONS[noise](key, (m, *x.shape)), np.float64)
        vjv = np.einsum("mbi,bij,mbj->mb", v, jac, v)
        if objective == "ssm":
            expected = (vjv + 0.5 * np.einsum("mbi,bi->mb", v, s) ** 2).mean(0)
        else:
            expected = vjv.mean(0) + 0.5 * (s**2).sum(-1)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


def _toy_model(xp):
    """Elementwise ``tanh(0.7 x + 0.1) * (1 + 0.5 cos(0.01 label))``: a diagonal Jacobian."""

    def model_fn(x, labels):
        scale = 1.0 + 0.5 * xp.cos(0.01 * labels.astype(x.dtype))
        return xp.tanh(0.7 * x + 0.1) * scale.reshape((-1,) + (1,) * (x.ndim - 1))

    return model_fn


@pytest.mark.parametrize("name", ref.NAMES)
@pytest.mark.parametrize(
    "objective,reduce_mean,likelihood_weighting,importance_sampling",
    [
        ("ism", True, False, False),
        ("ism", False, True, False),
        ("ssm", False, False, False),
        ("ssm_vr", True, True, True),
    ],
)
def test_noise_conditional_loss_matches_hand_computation(
    name, objective, reduce_mean, likelihood_weighting, importance_sampling
):
    sde = get_sde(name)
    eps = 1e-5
    x = jax.random.normal(jax.random.key(2), (32, 2, 3))
    key = jax.random.key(3)
    loss, per_ex = sm.score_matching_loss(
        sde,
        _toy_model(jnp),
        x,
        key,
        objective=objective,
        likelihood_weighting=likelihood_weighting,
        importance_sampling=importance_sampling,
        reduce_mean=reduce_mean,
        eps=eps,
        num_projections=2,
        noise="gaussian",
    )

    # The documented draws, replayed.
    k_t, k_z, k_v = jax.random.split(key, 3)
    if importance_sampling:
        t, w = (np.asarray(a, np.float64) for a in importance_sample_t(sde, k_t, (32,), eps))
    else:
        t, w = np.asarray(jax.random.uniform(k_t, (32,), minval=eps, maxval=1.0), np.float64), 1.0
    z = np.asarray(jax.random.normal(k_z, x.shape), np.float64)
    alpha, sigma, g2, _ = ref.coefficients(name, t)
    xt = alpha[:, None, None] * np.asarray(x, np.float64) + sigma[:, None, None] * z
    if name == "vesde":  # the network sees sigma and outputs the score
        labels, out_scale = sigma, np.ones_like(sigma)
    else:  # the network sees 999 t and predicts the noise: score = -output / sigma
        labels, out_scale = 999.0 * t, -1.0 / sigma
    cos = (1 + 0.5 * np.cos(0.01 * labels))[:, None, None]
    s = out_scale[:, None, None] * np.tanh(0.7 * xt + 0.1) * cos
    jac_diag = out_scale[:, None, None] * 0.7 * (1 - np.tanh(0.7 * xt + 0.1) ** 2) * cos
    flat = lambda a: a.reshape(a.shape[0], -1)
    if objective == "ism":
        per = flat(jac_diag).sum(-1) + 0.5 * flat(s**2).sum(-1)
    else:
        v = np.asarray(sm.PROJECTIONS["gaussian"](k_v, (2, *x.shape)), np.float64)
        vjv = (v**2 * jac_diag[None]).reshape(2, 32, -1).sum(-1)
        if objective == "ssm":
            per = (vjv + 0.5 * (v * s[None]).reshape(2, 32, -1).sum(-1) ** 2).mean(0)
        else:
            per = vjv.mean(0) + 0.5 * flat(s**2).sum(-1)
    weight = g2 if likelihood_weighting else sigma**2
    expected = w * weight * per * (2.0 / 6 if reduce_mean else 1.0)
    np.testing.assert_allclose(per_ex, expected, rtol=3e-4, atol=1e-5)
    np.testing.assert_allclose(loss, expected.mean(), rtol=3e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Gaussian data, linear scores.


def test_linear_score_objectives_have_the_closed_form_expectation():
    n = 200_000
    x = _gaussian_samples(jax.random.key(4), n)
    a = np.array([[-1.0, 0.2, 0.0], [0.4, -0.8, 0.1], [0.0, -0.3, -0.6]])
    b = np.array([0.3, 0.1, -0.2])
    f = lambda y: y @ jnp.asarray(a.T, jnp.float32) + jnp.asarray(b, jnp.float32)[None]
    expected = np.trace(a) + 0.5 * (np.trace(a @ SIGMA @ a.T) + np.sum((a @ MU + b) ** 2))
    key = jax.random.key(5)
    values = {
        "ism": sm.implicit_score_matching(f, x),
        "ism_hutchinson": sm.implicit_score_matching(f, x, key, exact_trace=False),
        "ssm_gauss": sm.sliced_score_matching(f, x, key, noise="gaussian"),
        "ssm_rad": sm.sliced_score_matching(f, x, key, noise="rademacher"),
        "ssm_vr_gauss": sm.sliced_score_matching(
            f, x, key, noise="gaussian", variance_reduction=True
        ),
    }
    for name, v in values.items():
        v = np.asarray(v, np.float64)
        stderr = v.std() / np.sqrt(n)
        assert abs(v.mean() - expected) < 4 * stderr + 1e-4, (name, v.mean(), expected, stderr)
    # The variance-reduced form has a smaller variance than plain SSM (Song et al. 2019, Sec. 3.2).
    var = {k: float(np.var(np.asarray(v))) for k, v in values.items()}
    assert var["ssm_vr_gauss"] < 0.5 * var["ssm_gauss"], var
    assert var["ism"] < var["ssm_vr_gauss"], var


def _ism_minimizer(x, d):
    def objective(theta, x, key):
        a, b = _linear(theta, d)
        return jnp.mean(sm.implicit_score_matching(lambda y: y @ a.T + b[None], x))

    return _linear(_quadratic_minimizer(objective, d * d + d, x, jax.random.key(0)), d)


@pytest.mark.parametrize("d", [2, 5])
def test_ism_minimizer_is_the_empirical_gaussian_score(d):
    rng = np.random.default_rng(d)
    q = rng.standard_normal((d, d))
    cov = q @ q.T / d + 0.3 * np.eye(d)
    mu = rng.standard_normal(d)
    n = 20_000
    x = _gaussian_samples(jax.random.key(6), n, mu, cov)
    a, b = _ism_minimizer(x, d)
    mu_hat, s_hat = _empirical(x)
    prec_hat = np.linalg.inv(s_hat)
    # The derivation in the module docstring, to float32 precision.
    np.testing.assert_allclose(a, -prec_hat, rtol=1e-3, atol=1e-3 * np.abs(prec_hat).max())
    np.testing.assert_allclose(b, prec_hat @ mu_hat, rtol=1e-3, atol=1e-3)
    # And the true score within sampling error: the relative error of S_hat^-1 is O(sqrt(d / n)).
    prec = np.linalg.inv(cov)
    # (Measured: under 0.7 of the unit sqrt(d / n) max|prec| for d = 2 and 5.)
    tol = 3 * np.sqrt(d / n) * np.abs(prec).max()
    np.testing.assert_allclose(a, -prec, atol=tol)
    np.testing.assert_allclose(b, prec @ mu, atol=tol * (1 + np.abs(mu).max()))


@pytest.mark.parametrize(
    "objective,noise", [("ssm", "rademacher"), ("ssm", "gaussian"), ("ssm_vr", "gaussian")]
)
def test_ssm_minimizer_approaches_ism_with_many_projections(objective, noise):
    d, n = 3, 4_000
    x = _gaussian_samples(jax.random.key(7), n)
    a_ism, b_ism = _ism_minimizer(x, d)
    errors = {}
    for m in (1, 64):

        def obj(theta, x, key, m=m):
            a, b = _linear(theta, d)
            per = sm.OBJECTIVES[objective](
                lambda y: y @ a.T + b[None],
                x,
                key,
                exact_trace=True,
                num_projections=m,
                noise=noise,
            )
            return jnp.mean(per)

        a, b = _linear(_quadratic_minimizer(obj, d * d + d, x, jax.random.key(8)), d)
        errors[m] = np.abs(a - a_ism).max() + np.abs(b - b_ism).max()
    # With M projections the projection noise in the minimizer falls like 1 / sqrt(n M). Measured
    # (max abs error of A plus that of b): 0.14-0.17 with M = 1, 0.017-0.045 with M = 64.
    assert errors[64] < 0.5 * errors[1], errors
    assert errors[64] < 0.1, errors
    # and with a single projection it is still the Gaussian score within sampling error.
    assert errors[1] < 0.5, errors


@pytest.mark.parametrize("name", ["vesde", "vpsde"])
def test_fixed_level_sm_fits_the_perturbed_marginal_score(name):
    """Plain score matching of the data smoothed by one noise level (``fixed_t``)."""
    d, n, t = 3, 20_000, 0.3
    sde = get_sde(name, sigma_max=3.0) if name == "vesde" else get_sde(name)
    x = _gaussian_samples(jax.random.key(9), n)
    key = jax.random.key(10)

    def objective(theta, x, key):
        a, b = _linear(theta, d)
        model_fn = lambda y, labels: y @ a.T + b[None]
        return sm.score_matching_loss(
            sde, model_fn, x, key, objective="ism", fixed_t=t, reduce_mean=False
        )[0]

    a, b = _linear(_quadratic_minimizer(objective, d * d + d, x, key), d)
    alpha, sigma = (float(v[0]) for v in sde.marginal_coeffs(jnp.full((1,), t)))
    if name == "vpsde":  # the network predicts the noise: score = -output / sigma
        a, b = -a / sigma, -b / sigma
    # Replayed perturbation: exactly the empirical score of the perturbed sample.
    z = jax.random.normal(jax.random.split(key, 3)[1], x.shape)
    mu_t, s_t = _empirical(alpha * x + sigma * z)
    prec_t = np.linalg.inv(s_t)
    np.testing.assert_allclose(a, -prec_t, rtol=2e-3, atol=2e-3 * np.abs(prec_t).max())
    np.testing.assert_allclose(b, prec_t @ mu_t, rtol=2e-3, atol=2e-3)
    # The perturbed marginal N(alpha mu, alpha^2 Sigma + sigma^2 I) within sampling error.
    prec = np.linalg.inv(alpha**2 * SIGMA + sigma**2 * np.eye(d))
    # (Measured: 2.0 (A) and 2.8 (b) units of sqrt(d / n) max|prec|.)
    tol = 6 * np.sqrt(d / n) * np.abs(prec).max()
    np.testing.assert_allclose(a, -prec, atol=tol)
    np.testing.assert_allclose(b, prec @ (alpha * MU), atol=2 * tol)


def test_discrete_levels_each_reach_their_marginal_score():
    """SMLD levels with one linear score per level: the minimizer at level i is the score of
    ``N(mu, Sigma + sigma_i^2 I)``; the sigma_i^2 weights do not move it."""
    d, n, levels = 3, 30_000, 3
    sde = get_sde("vesde", sigma_min=0.2, sigma_max=2.0, N=levels)
    x = _gaussian_samples(jax.random.key(11), n)
    key = jax.random.key(12)
    p = d * d + d

    def objective(theta, x, key):
        th = theta.reshape(levels, p)
        a, b = th[:, : d * d].reshape(levels, d, d), th[:, d * d :]
        model_fn = lambda y, labels: jnp.einsum("bij,bj->bi", a[labels], y) + b[labels]
        return sm.score_matching_loss(sde, model_fn, x, key, objective="ssm_vr", continuous=False)[
            0
        ]

    theta = _quadratic_minimizer(objective, levels * p, x, key).reshape(levels, p)
    sigmas = np.asarray(sde.discrete_sigmas)[::-1]  # label 0 is sigma_max
    k_t = jax.random.split(key, 3)[0]
    labels = np.asarray(jax.random.randint(k_t, (n,), 0, levels))
    for i in range(levels):
        a = theta[i, : d * d].reshape(d, d)
        prec = np.linalg.inv(SIGMA + sigmas[i] ** 2 * np.eye(d))
        count = int((labels == i).sum())
        # SSM-VR with one Rademacher projection: projection noise on top of sampling error.
        # (Measured: 1.1-1.2 (A) and 1.8-2.3 (b) units of sqrt(d / count) max|prec|.)
        tol = 5 * np.sqrt(d / count) * np.abs(prec).max()
        np.testing.assert_allclose(a, -prec, atol=tol, err_msg=f"level {i}")
        np.testing.assert_allclose(theta[i, d * d :], prec @ MU, atol=2 * tol, err_msg=f"{i}")


@pytest.mark.parametrize("name", ref.NAMES)
@pytest.mark.parametrize("objective", ["ism", "ssm"])
def test_random_time_loss_is_minimal_at_the_marginal_score(name, objective):
    """``E_t[sigma_t^2 (c^2/2 - c) tr(C_t^-1)]`` for ``c`` times the exact score of ``p_t``."""
    d, n, eps = 2, 40_000, 1e-5
    mu, cov = MU[:2], SIGMA[:2, :2]
    sde = get_sde(name)
    x = _gaussian_samples(jax.random.key(13), n, mu, cov)
    lam = np.linalg.eigvalsh(cov)

    def model_for(c):
        def model_fn(y, labels):
            if name == "vesde":  # label = sigma_t, output = score
                t = jnp.log(labels / 0.01) / np.log(50.0 / 0.01)
            else:  # label = 999 t, output = -sigma_t score
                t = labels / 999.0
            alpha, sigma = sde.marginal_coeffs(t)
            cov_t = (
                alpha[:, None, None] ** 2 * jnp.asarray(cov, jnp.float32)[None]
                + sigma[:, None, None] ** 2 * jnp.eye(d)[None]
            )
            diff = y - alpha[:, None] * jnp.asarray(mu, jnp.float32)[None]
            score = -c * jnp.linalg.solve(cov_t, diff[..., None])[..., 0]
            return score if name == "vesde" else -sigma[:, None] * score

        return model_fn

    def expected(c):
        def integrand(t):
            alpha, sigma, _, _ = ref.coefficients(name, np.asarray(t))
            return sigma**2 * (0.5 * c**2 - c) * np.sum(1.0 / (alpha**2 * lam + sigma**2))

        return integrate.quad(integrand, eps, 1.0, limit=200)[0] / (1.0 - eps)

    means = {}
    for c in (0.5, 1.0, 1.5):
        _, per = sm.score_matching_loss(
            sde, model_for(c), x, jax.random.key(14), objective=objective, reduce_mean=False
        )
        per = np.asarray(per, np.float64)
        stderr = per.std() / np.sqrt(n)
        assert abs(per.mean() - expected(c)) < 4 * stderr, (c, per.mean(), expected(c), stderr)
        means[c] = per.mean()
    assert means[1.0] < min(means[0.5], means[1.5])


# ----------------------------------------------------------------------------------------------
# Wiring: get_loss_fn, builders, errors.


def test_dsm_default_is_unchanged():
    sde = get_sde("vpsde")
    x = jax.random.normal(jax.random.key(15), (8, 4))
    key = jax.random.key(16)
    model = _toy_model(jnp)
    default = losses.get_loss_fn(sde, continuous=True)(model, x, key)
    named = losses.get_loss_fn(sde, continuous=True, loss="dsm")(model, x, key)
    direct = losses.sde_loss(sde, model, x, key)
    for a, b in zip(default, named, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(default, direct, strict=True):
        np.testing.assert_array_equal(a, b)


def test_get_loss_fn_selects_the_objective():
    sde = get_sde("vesde")
    x = jax.random.normal(jax.random.key(17), (8, 2))
    key = jax.random.key(18)
    model = _toy_model(jnp)
    for loss in ("ism", "ssm", "ssm_vr"):
        fn = losses.get_loss_fn(
            sde, continuous=True, loss=loss, ssm_num_projections=2, ssm_noise="gaussian"
        )
        got = fn(model, x, key)
        want = sm.score_matching_loss(
            sde, model, x, key, objective=loss, num_projections=2, noise="gaussian"
        )
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(loss="nce"), "training.loss='nce'"),
        (dict(loss="ssm", ssm_noise="uniform"), "ssm_noise='uniform'"),
        (dict(loss="ssm", ssm_num_projections=0), "ssm_num_projections must be >= 1"),
        (dict(loss="ssm", continuous=False, sde="subvpsde"), "sub-VP"),
        (dict(loss="ism", continuous=False, likelihood_weighting=True), "likelihood_weighting"),
        (dict(loss="ssm", importance_sampling=True), "importance_sampling"),
    ],
)
def test_get_loss_fn_errors_name_the_fix(kwargs, match):
    kwargs = {"continuous": True, **kwargs}
    sde = get_sde(kwargs.pop("sde", "vesde"))
    with pytest.raises(ValueError, match=match):
        losses.get_loss_fn(sde, **kwargs)


def test_exact_trace_on_images_is_refused_with_advice():
    from configs.mnist.ddpmpp_vp import get_config

    config = override(get_config(), {"training.loss": "ism", "training.ism_exact_trace": True})
    sde = experiment.sde_from_config(config)
    with pytest.raises(ValueError, match="ism_exact_trace=False.*loss=ssm"):
        experiment.loss_from_config(config, sde)
    config.training.ism_exact_trace = False
    experiment.loss_from_config(config, sde)  # Hutchinson's trace is fine
    with pytest.raises(ValueError, match="EXACT_TRACE_MAX_DIM"):
        sm.implicit_score_matching(lambda y: y, jnp.zeros((2, 28, 28, 1)))


# ----------------------------------------------------------------------------------------------
# End to end on images: one sliced-score-matching step of a tiny U-Net on MNIST.

MNIST = pathlib.Path(os.environ.get("SCORESDE_SHARED", ROOT.parent / "shared")) / "data" / "mnist"


@pytest.mark.skipif(
    not (MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason=f"MNIST IDX files not found in {MNIST} (set SCORESDE_SHARED)",
)
@pytest.mark.slow
def test_mnist_trains_one_step_with_sliced_score_matching(tmp_path):
    from configs.mnist.ddpmpp_vp import get_config
    from scoresde_jax.run.trainer import train

    fields = {
        "num_devices": 1,  # compile once for one device: the step is all compilation here
        "model.nf": 8,
        "model.ch_mult": (1,),
        "model.num_res_blocks": 1,
        "model.attn_resolutions": (),
        "model.dropout": 0.0,
        "training.loss": "ssm",
        "training.batch_size": 8,
        "training.n_iters": 1,
        "training.n_jitted_steps": 1,
        "training.log_freq": 1,
        "training.eval_freq": 0,
        "training.snapshot_freq": 1,
        "training.snapshot_freq_for_preemption": 1,
        "training.snapshot_sampling": False,
        "training.progress_bar": False,
        "optim.warmup": 1,
        "data.path": str(MNIST),
    }
    state = train(override(get_config(), fields), str(tmp_path))
    assert int(state.step) == 1
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses_logged = [r["loss"] for r in rows if "loss" in r]
    assert len(losses_logged) == 1 and np.isfinite(losses_logged[0]), rows
