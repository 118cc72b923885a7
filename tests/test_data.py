"""Toy datasets: determinism, scale, and the closed-form densities the toy evaluation reports."""

import math

import numpy as np
import pytest

from scoresde_jax.data import TOY_DATASETS, TOY_GMM, make_toy_dataset, toy_density


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_deterministic_and_unit_scale(name):
    a = make_toy_dataset(name, 20_000, seed=3)
    b = make_toy_dataset(name, 20_000, seed=3)
    c = make_toy_dataset(name, 20_000, seed=4)
    assert a.shape == (20_000, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Roughly standardised, so one set of SDE hyperparameters suits every toy set.
    assert np.all(np.abs(a.mean(0)) < 0.5)
    assert np.all((a.std(0) > 0.5) & (a.std(0) < 1.6))


def test_unknown_dataset_names_choices():
    with pytest.raises(ValueError, match="checkerboard"):
        make_toy_dataset("spirals", 10, 0)


def test_gmm_samples_follow_the_mixture():
    x = make_toy_dataset("gmm", 40_000, seed=1)
    resp = np.asarray(TOY_GMM.responsibilities(x))
    freq = np.bincount(resp.argmax(1), minlength=8) / len(x)
    se = np.sqrt(TOY_GMM.weights * (1 - TOY_GMM.weights) / len(x))
    assert np.all(np.abs(freq - TOY_GMM.weights) < 5 * se)
    # The density is normalised: a midpoint rule with spacing h = std / 12 integrates it to 1.
    h = 0.01
    g = np.arange(-3 + h / 2, 3, h, dtype=np.float32)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    integral = h * h * np.exp(toy_density("gmm", grid).astype(np.float64)).sum()
    assert abs(integral - 1) < 1e-4


def test_checkerboard_density():
    x = make_toy_dataset("checkerboard", 10_000, seed=2)
    logp = toy_density("checkerboard", x)
    np.testing.assert_allclose(logp, -math.log(8.0))
    # Points on the light squares have zero density.
    light = np.array([[0.5, -0.5], [-1.5, 1.5]], np.float32)
    assert np.all(np.isneginf(toy_density("checkerboard", light)))
    assert toy_density("moons", x) is None
