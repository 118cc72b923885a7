"""Every ``config.sampling.method`` builds a sampler that draws the toy mixture correctly when
given its exact score (so the CLI's ``--config.sampling.method=...`` choices all work)."""

import jax
import numpy as np
import pytest

from configs.toy.gmm import get_config
from scoresde_jax.data import TOY_GMM
from scoresde_jax.run import experiment


@pytest.mark.parametrize(
    "method, overrides, nfe",
    [
        ("edm", {"num_steps": 18}, 35),
        ("dpm_solver_pp", {"num_steps": 20}, 20),
        ("ode", {"rtol": 1e-4, "atol": 1e-4}, None),
    ],
)
def test_sampling_methods_from_config(method, overrides, nfe):
    config = get_config()
    config.sampling.method = method
    for k, v in overrides.items():
        config.sampling[k] = v
    sde = experiment.sde_from_config(config)
    sample = experiment.sampler_from_config(config.sampling, sde)
    n = 4_000
    res = jax.jit(lambda key: sample(TOY_GMM.score_fn(sde), key, (n, 2)))(jax.random.PRNGKey(0))
    if nfe is not None:
        assert int(res.nfe) == nfe
    comp = np.asarray(TOY_GMM.responsibilities(np.asarray(res.x))).argmax(-1)
    freq = np.bincount(comp, minlength=TOY_GMM.num_components) / n
    stderr = np.sqrt(TOY_GMM.weights * (1 - TOY_GMM.weights) / n)
    assert np.all(np.abs(freq - TOY_GMM.weights) < 5 * stderr), (freq, TOY_GMM.weights)


def test_unknown_method_is_a_clear_error():
    config = get_config()
    config.sampling.method = "magic"
    with pytest.raises(ValueError, match="dpm_solver_pp"):
        experiment.sampler_from_config(config.sampling, experiment.sde_from_config(config))
