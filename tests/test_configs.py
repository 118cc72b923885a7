"""Every config file loads and builds its SDE and network (abstractly, no weights allocated)."""

from pathlib import Path

import pytest

from scoresde_jax import builders
from scoresde_jax.models.summary import count_parameters, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    str(p.relative_to(REPO))
    for p in (REPO / "configs").rglob("*.py")
    if p.name != "__init__.py" and not p.name.startswith("default")
)

# Parameter counts of the official implementation's networks for the same configs.
EXPECTED = {
    "configs/ve/cifar10_ncsnpp_continuous.py": 62_758_915,
    "configs/vp/cifar10_ddpmpp_continuous.py": 61_804_419,
    "configs/vp/cifar10_ddpm.py": 35_218_947,
}


def test_config_list_is_not_empty():
    assert "configs/ve/cifar10.py" in CONFIGS and "configs/toy/gmm.py" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds(path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(path)
    sde = builders.sde_from_config(config)
    assert sde.N == config.model.num_scales
    builders.optimizer_from_config(config.optim)
    builders.loss_from_config(config, sde)
    builders.sampler_from_config(config.sampling, sde)
    n = count_parameters(config)
    assert n > 0
    if path in EXPECTED:
        assert n == EXPECTED[path]
