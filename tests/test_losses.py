"""Tests of scoresde_jax.core.losses against hand computations and closed forms.

Two kinds of ground truth:

* The same random draws (replayed from the documented key protocol) pushed through a float64 numpy
  transcription of each loss.
* Gaussian data ``x_0 ~ N(0, c^2 I)`` with the exact score. With ``x_t = alpha x_0 + sigma z`` and
  ``v = alpha^2 c^2 + sigma^2``, ``sigma s*(x_t) + z = r z - (sigma alpha / v) x_0`` with
  ``r = alpha^2 c^2 / v``, whose coordinates are i.i.d. ``N(0, r)``. Hence at fixed ``t``
  ``||sigma s* + z||^2 ~ r chi^2_D`` and ``E||sigma s* + z||^2 = D r = D - sigma^2 E||s*||^2``:
  the minimum of the denoising loss, which the Monte-Carlo loss must match once integrated over
  ``t``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sde_reference as ref
from scipy import integrate

from scoresde_jax.core import losses
from scoresde_jax.core.sde import get_sde, importance_sample_t

T = 1.0


def _toy_model(xp):
    """A fixed nonlinear "network" that depends on both x and its labels."""

    def model_fn(x, labels):
        scale = 1.0 + 0.5 * xp.cos(0.01 * labels.astype(x.dtype))
        return xp.tanh(0.7 * x + 0.1) * scale.reshape((-1,) + (1,) * (x.ndim - 1))

    return model_fn


def _np_reduce(sq, reduce_mean):
    flat = sq.reshape(sq.shape[0], -1)
    return flat.mean(-1) if reduce_mean else 0.5 * flat.sum(-1)


def _bcast(v, x):
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


# ----------------------------------------------------------------------------------------------
# Hand computations with the same draws.


@pytest.mark.parametrize("name", ref.NAMES)
@pytest.mark.parametrize("likelihood_weighting", [False, True])
@pytest.mark.parametrize("reduce_mean", [True, False])
def test_sde_loss_matches_hand_computation(name, likelihood_weighting, reduce_mean):
    sde = get_sde(name)
    eps = 1e-5
    x = jax.random.normal(jax.random.key(0), (16, 3, 2, 2))
    key = jax.random.key(1)
    loss, per_ex = losses.sde_loss(
        sde,
        _toy_model(jnp),
        x,
        key,
        likelihood_weighting=likelihood_weighting,
        reduce_mean=reduce_mean,
        eps=eps,
    )

    k_t, k_z = jax.random.split(key)
    t = np.asarray(jax.random.uniform(k_t, (16,), minval=eps, maxval=T), np.float64)
    z = np.asarray(jax.random.normal(k_z, x.shape), np.float64)
    x = np.asarray(x, np.float64)
    alpha, sigma, g2, _ = ref.coefficients(name, t)
    x_t = _bcast(alpha, x) * x + _bcast(sigma, x) * z
    if name == "vesde":
        score = _toy_model(np)(x_t, sigma)  # VE networks see sigma and output the score
    else:
        score = -_toy_model(np)(x_t, 999.0 * t) / _bcast(sigma, x)  # noise prediction
    if likelihood_weighting:
        expected = g2 * _np_reduce((score + z / _bcast(sigma, x)) ** 2, reduce_mean)
    else:
        expected = _np_reduce((_bcast(sigma, x) * score + z) ** 2, reduce_mean)
    np.testing.assert_allclose(per_ex, expected, rtol=2e-4)
    np.testing.assert_allclose(loss, expected.mean(), rtol=2e-4)


@pytest.mark.parametrize("name", ref.NAMES)
def test_importance_sampled_loss_matches_hand_computation(name):
    sde = get_sde(name)
    x = jax.random.normal(jax.random.key(2), (16, 5))
    key = jax.random.key(3)
    _, per_ex = losses.sde_loss(
        sde,
        _toy_model(jnp),
        x,
        key,
        likelihood_weighting=True,
        importance_sampling=True,
        reduce_mean=False,
    )
    k_t, k_z = jax.random.split(key)
    t, w = (np.asarray(a, np.float64) for a in importance_sample_t(sde, k_t, (16,), 1e-5))
    z = np.asarray(jax.random.normal(k_z, x.shape), np.float64)
    x = np.asarray(x, np.float64)
    alpha, sigma, g2, _ = ref.coefficients(name, t)
    x_t = alpha[:, None] * x + sigma[:, None] * z
    if name == "vesde":
        score = _toy_model(np)(x_t, sigma)
    else:
        score = -_toy_model(np)(x_t, 999.0 * t) / sigma[:, None]
    expected = w * g2 * 0.5 * ((score + z / sigma[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(per_ex, expected, rtol=2e-4)


@pytest.mark.parametrize("reduce_mean", [True, False])
def test_smld_loss_matches_hand_computation(reduce_mean):
    n = 10  # few levels, so that every label occurs in the batch
    sde = get_sde("vesde", N=n)
    x = jax.random.normal(jax.random.key(4), (32, 2, 3))
    key = jax.random.key(5)
    loss, per_ex = losses.smld_loss(sde, _toy_model(jnp), x, key, reduce_mean=reduce_mean)

    k_i, k_z = jax.random.split(key)
    labels = np.asarray(jax.random.randint(k_i, (32,), 0, n))
    z = np.asarray(jax.random.normal(k_z, x.shape), np.float64)
    x = np.asarray(x, np.float64)
    sig = ref.smld_sigmas(n)[::-1][labels]  # label 0 is the largest noise level
    noise = _bcast(sig, x) * z
    out = _toy_model(np)(x + noise, labels)
    expected = _np_reduce((out + noise / _bcast(sig, x) ** 2) ** 2, reduce_mean) * sig**2
    assert set(labels) == set(range(n))
    np.testing.assert_allclose(per_ex, expected, rtol=2e-4)
    np.testing.assert_allclose(loss, expected.mean(), rtol=2e-4)


@pytest.mark.parametrize("reduce_mean", [True, False])
def test_ddpm_loss_matches_hand_computation(reduce_mean):
    sde = get_sde("vpsde")
    x = jax.random.normal(jax.random.key(6), (32, 2, 3))
    key = jax.random.key(7)
    loss, per_ex = losses.ddpm_loss(sde, _toy_model(jnp), x, key, reduce_mean=reduce_mean)

    k_i, k_z = jax.random.split(key)
    labels = np.asarray(jax.random.randint(k_i, (32,), 0, 1000))
    z = np.asarray(jax.random.normal(k_z, x.shape), np.float64)
    x = np.asarray(x, np.float64)
    abar = ref.ddpm_alphas_cumprod()[labels]
    x_i = _bcast(np.sqrt(abar), x) * x + _bcast(np.sqrt(1 - abar), x) * z
    expected = _np_reduce((_toy_model(np)(x_i, labels) - z) ** 2, reduce_mean)
    np.testing.assert_allclose(per_ex, expected, rtol=2e-4)
    np.testing.assert_allclose(loss, expected.mean(), rtol=2e-4)


# ----------------------------------------------------------------------------------------------
# Closed forms for Gaussian data and the exact score.

C = 0.8  # data std
D = 4
BATCH = 20_000


def _exact_model(name, c=C, m=None, params=(1.0, 1.0)):
    """The network whose score is exact for data ``N(m, c^2 I)`` when ``params == (1, 1)``.

    The score is ``-(a x - b alpha m) / v``; VE networks output it, VP-type networks output the
    noise prediction ``-sigma * score``. Labels are inverted to ``t`` following the score table.
    """
    m = jnp.zeros((1, 1)) if m is None else jnp.asarray(m).reshape(1, -1)

    def model_fn(x, labels):
        a, b = params[0], params[1]
        if name == "vesde":
            alpha, sigma = jnp.ones_like(labels), labels
        else:
            alpha, sigma, _, _ = ref.coefficients(name, labels / 999.0, jnp)
        v = alpha**2 * c**2 + sigma**2
        score = -(a * x - b * alpha[:, None] * m) / v[:, None]
        return score if name == "vesde" else -sigma[:, None] * score

    return model_fn


def _r(name, t, c=C):
    alpha, sigma, g2, _ = ref.coefficients(name, t)
    return alpha**2 * c**2 / (alpha**2 * c**2 + sigma**2), g2 / sigma**2


def _quad_mean(fn, eps):
    # Substituting t = e^u resolves the 1/t behaviour of the likelihood weighting near 0.
    val, _ = integrate.quad(lambda u: fn(math.exp(u)) * math.exp(u), math.log(eps), 0.0, limit=200)
    return val / (T - eps)


def _assert_mc_close(per_ex, expected, n_se=4.0):
    per_ex = np.asarray(per_ex, np.float64)
    se = per_ex.std(ddof=1) / math.sqrt(per_ex.size)
    assert abs(per_ex.mean() - expected) < n_se * se, (per_ex.mean(), expected, se)
    # A loose tolerance with a large standard error would make the check vacuous.
    assert se < 0.05 * abs(expected)


@pytest.mark.parametrize("name", ref.NAMES)
@pytest.mark.parametrize("reduce_mean", [True, False])
def test_sde_loss_minimum_matches_closed_form(name, reduce_mean):
    eps = 1e-5
    x = C * jax.random.normal(jax.random.key(10), (BATCH, D))
    _, per_ex = losses.sde_loss(
        get_sde(name), _exact_model(name), x, jax.random.key(11), reduce_mean=reduce_mean
    )
    scale = 1.0 if reduce_mean else 0.5 * D
    expected = scale * _quad_mean(lambda t: _r(name, t)[0], eps)
    _assert_mc_close(per_ex, expected)


@pytest.mark.parametrize("name", ref.NAMES)
def test_likelihood_weighted_minimum_matches_closed_form(name):
    eps = 1e-5
    x = C * jax.random.normal(jax.random.key(12), (BATCH, D))
    # Uniform t has infinite-ish variance here for VP (the weight g^2/sigma^2 ~ 1/t), so the
    # closed form is checked with importance sampling; uniform sampling is checked below.
    _, per_ex = losses.sde_loss(
        get_sde(name),
        _exact_model(name),
        x,
        jax.random.key(13),
        likelihood_weighting=True,
        importance_sampling=True,
        reduce_mean=False,
        eps=eps,
    )
    expected = 0.5 * D * _quad_mean(lambda t: math.prod(_r(name, t)), eps)
    _assert_mc_close(per_ex, expected)


@pytest.mark.parametrize("name", ["vpsde", "subvpsde"])
def test_importance_sampling_is_unbiased_and_reduces_variance(name):
    eps = 1e-3  # large enough for the uniform estimator to have a usable standard error
    sde = get_sde(name)
    x = C * jax.random.normal(jax.random.key(14), (BATCH, D))
    kwargs = dict(likelihood_weighting=True, reduce_mean=True, eps=eps)
    _, uniform = losses.sde_loss(sde, _exact_model(name), x, jax.random.key(15), **kwargs)
    _, weighted = losses.sde_loss(
        sde, _exact_model(name), x, jax.random.key(16), importance_sampling=True, **kwargs
    )
    uniform, weighted = np.asarray(uniform, np.float64), np.asarray(weighted, np.float64)
    se = math.sqrt((uniform.var() + weighted.var()) / BATCH)
    assert abs(uniform.mean() - weighted.mean()) < 4 * se
    expected = _quad_mean(lambda t: math.prod(_r(name, t)), eps)
    for est in (uniform, weighted):
        assert abs(est.mean() - expected) < 4 * est.std() / math.sqrt(BATCH)
    assert weighted.var() < 0.2 * uniform.var()


@pytest.mark.parametrize("reduce_mean", [True, False])
def test_smld_loss_minimum_matches_closed_form(reduce_mean):
    sde = get_sde("vesde")
    sig_desc = jnp.asarray(ref.smld_sigmas()[::-1], jnp.float32)

    def model_fn(x, labels):
        return -x / (C**2 + sig_desc[labels] ** 2)[:, None]

    x = C * jax.random.normal(jax.random.key(17), (BATCH, D))
    _, per_ex = losses.smld_loss(sde, model_fn, x, jax.random.key(18), reduce_mean=reduce_mean)
    s = ref.smld_sigmas()
    expected = (1.0 if reduce_mean else 0.5 * D) * np.mean(C**2 / (C**2 + s**2))
    _assert_mc_close(per_ex, expected)


@pytest.mark.parametrize("reduce_mean", [True, False])
def test_ddpm_loss_minimum_matches_closed_form(reduce_mean):
    sde = get_sde("vpsde")
    abar = ref.ddpm_alphas_cumprod()
    abar32 = jnp.asarray(abar, jnp.float32)

    def model_fn(x, labels):  # exact noise prediction -sqrt(1 - abar) * score
        a = abar32[labels]
        return (jnp.sqrt(1 - a) / (a * C**2 + 1 - a))[:, None] * x

    x = C * jax.random.normal(jax.random.key(19), (BATCH, D))
    _, per_ex = losses.ddpm_loss(sde, model_fn, x, jax.random.key(20), reduce_mean=reduce_mean)
    expected = (1.0 if reduce_mean else 0.5 * D) * np.mean(abar * C**2 / (abar * C**2 + 1 - abar))
    _assert_mc_close(per_ex, expected)


@pytest.mark.parametrize("name", ref.NAMES)
def test_gradient_vanishes_at_true_score(name):
    m = jnp.asarray([0.5, -1.0, 2.0])
    x = m[None] + C * jax.random.normal(jax.random.key(21), (BATCH, 3))
    sde = get_sde(name)

    def per_example_grads(params):
        def per_ex(p):
            return losses.sde_loss(sde, _exact_model(name, m=m, params=p), x, jax.random.key(22))[1]

        return np.asarray(jax.jacfwd(per_ex)(jnp.asarray(params)), np.float64)

    g = per_example_grads([1.0, 1.0])
    se = g.std(0, ddof=1) / math.sqrt(BATCH)
    assert np.all(np.abs(g.mean(0)) < 4.5 * se), (g.mean(0), se)
    # The same check has power: away from the optimum the mean gradient is clearly non-zero.
    g_off = per_example_grads([1.1, 0.8])
    se_off = g_off.std(0, ddof=1) / math.sqrt(BATCH)
    assert np.all(np.abs(g_off.mean(0)) > 10 * se_off), (g_off.mean(0), se_off)


# ----------------------------------------------------------------------------------------------
# get_loss_fn dispatch, errors and differentiability.


@pytest.mark.parametrize(
    "name, continuous, expected",
    [
        ("vesde", True, "sde"),
        ("vpsde", True, "sde"),
        ("subvpsde", True, "sde"),
        ("vesde", False, "smld"),
        ("vpsde", False, "ddpm"),
    ],
)
def test_get_loss_fn_dispatch(name, continuous, expected):
    sde = get_sde(name)
    x = jax.random.normal(jax.random.key(30), (8, 3))
    key = jax.random.key(31)
    model = _toy_model(jnp)
    got = losses.get_loss_fn(sde, continuous=continuous, reduce_mean=False)(model, x, key)
    if expected == "sde":
        want = losses.sde_loss(sde, model, x, key, reduce_mean=False)
    elif expected == "smld":
        want = losses.smld_loss(sde, model, x, key, reduce_mean=False)
    else:
        want = losses.ddpm_loss(sde, model, x, key, reduce_mean=False)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


def test_get_loss_fn_passes_options():
    sde = get_sde("vpsde")
    x = jax.random.normal(jax.random.key(32), (8, 3))
    key = jax.random.key(33)
    model = _toy_model(jnp)
    loss_fn = losses.get_loss_fn(
        sde, continuous=True, likelihood_weighting=True, importance_sampling=True, eps=1e-3
    )
    want = losses.sde_loss(
        sde, model, x, key, likelihood_weighting=True, importance_sampling=True, eps=1e-3
    )
    np.testing.assert_allclose(loss_fn(model, x, key)[1], want[1], rtol=1e-6)


def test_get_loss_fn_errors():
    with pytest.raises(ValueError, match="continuous=True"):
        losses.get_loss_fn(get_sde("subvpsde"), continuous=False)
    with pytest.raises(ValueError, match="likelihood_weighting"):
        losses.get_loss_fn(get_sde("vpsde"), continuous=True, importance_sampling=True)
    with pytest.raises(ValueError, match="continuous"):
        losses.get_loss_fn(get_sde("vesde"), continuous=False, likelihood_weighting=True)
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="likelihood_weighting"):
        losses.sde_loss(
            get_sde("vesde"), _toy_model(jnp), x, jax.random.key(0), importance_sampling=True
        )
    with pytest.raises(TypeError):
        losses.smld_loss(get_sde("vpsde"), _toy_model(jnp), x, jax.random.key(0))
    with pytest.raises(TypeError):
        losses.ddpm_loss(get_sde("subvpsde"), _toy_model(jnp), x, jax.random.key(0))


@pytest.mark.parametrize(
    "name, continuous, lw",
    [
        ("vesde", True, False),
        ("subvpsde", True, True),
        ("vesde", False, False),
        ("vpsde", False, False),
    ],
)
def test_loss_is_jittable_and_differentiable(name, continuous, lw):
    sde = get_sde(name)
    loss_fn = losses.get_loss_fn(
        sde, continuous=continuous, likelihood_weighting=lw, importance_sampling=lw
    )

    def make_model_fn(w):
        def model_fn(x, labels):
            return jnp.tanh(x @ w) * (1.0 + 0.001 * labels.astype(x.dtype))[:, None]

        return model_fn

    @jax.jit
    def value_and_grad(w, batch, key):
        return jax.value_and_grad(lambda p: loss_fn(make_model_fn(p), batch, key)[0])(w)

    w = 0.1 * jax.random.normal(jax.random.key(40), (3, 3))
    batch = jax.random.normal(jax.random.key(41), (8, 3))
    value, grad = value_and_grad(w, batch, jax.random.key(42))
    assert value.shape == () and grad.shape == w.shape
    assert np.isfinite(value) and np.all(np.isfinite(grad)) and np.any(grad != 0)
