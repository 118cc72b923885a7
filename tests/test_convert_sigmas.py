"""Checkpoints whose ``sigmas`` buffer differs from the config's noise levels: the conversion
error names the config values that reproduce the buffer, and ``--noise_levels=checkpoint``
makes the network divide by the checkpoint's own levels, reproducing the reference output."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixture_utils import load_fixture, nhwc, per_sample_error
from train_utils import override

from scoresde_jax.errors import ConfigError
from scoresde_jax.models import ddpm
from scoresde_jax.modes.convert import ConversionInputError, convert_checkpoint
from scoresde_jax.run.experiment import ddpm_from_config, restore_checkpoint

# Fixture -> our config file (the fixture's overrides are applied on top). Both networks divide
# their output by sigmas[labels], so the buffer decides the output.
CASES = {
    "ddpm_ve_small": "configs/ve/cifar10_ddpm.py",
    "ncsnv2_64_small": "configs/ve/ncsnv2/cifar10.py",
}


def _our_config(name: str):

    from ml_collections import config_flags  # noqa: F401  (the loader below mirrors the flag)

    path = pathlib.Path(__file__).resolve().parents[1] / CASES[name]
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    _, meta, _, _ = load_fixture(name)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["overrides"].items()}
    return override(config, {k: v for k, v in fields.items() if not k.startswith("data.channels")})


def _perturbed(name: str, tmp_path, buffer):
    _, _, state_dict, io = load_fixture(name)
    original = np.asarray(state_dict["sigmas"], np.float64)
    path = tmp_path / "state_dict.npz"
    np.savez(path, **dict(state_dict, sigmas=np.asarray(buffer(original), np.float64)))
    return str(path), original, io


@pytest.mark.parametrize("name", sorted(CASES))
def test_geometric_buffer_names_the_reproducing_config(tmp_path, name):
    config = _our_config(name)
    n = config.model.num_scales
    lo, hi = config.model.sigma_min, 0.8 * config.model.sigma_max
    path, _, _ = _perturbed(
        name, tmp_path, lambda s: np.exp(np.linspace(np.log(hi), np.log(lo), n))
    )
    with pytest.raises(ConversionInputError) as err:
        convert_checkpoint(config, source="torch", checkpoint=path, workdir=str(tmp_path / "w"))
    message = str(err.value)
    assert f"--config.model.sigma_min={lo!r}" in message
    assert f"--config.model.sigma_max={hi!r}" in message
    assert f"--config.model.num_scales={n}" in message
    # Converting with those values works.
    config = override(config, {"model.sigma_max": hi})
    convert_checkpoint(config, source="torch", checkpoint=path, workdir=str(tmp_path / "w2"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpoint_levels_reproduce_the_reference_output(tmp_path, name):
    config = _our_config(name)
    wobble = lambda s: s * np.exp(0.05 * np.sin(np.arange(len(s))))
    path, original, io = _perturbed(name, tmp_path, wobble)
    perturbed = wobble(original)
    workdir = tmp_path / "w"
    with pytest.raises(ConversionInputError, match="not a geometric sequence.*--noise_levels"):
        convert_checkpoint(config, source="torch", checkpoint=path, workdir=str(workdir))
    assert not (workdir / "checkpoints").exists()

    convert_checkpoint(
        config, source="torch", checkpoint=path, workdir=str(workdir), noise_levels="checkpoint"
    )
    levels_file = workdir / "noise_levels.npy"
    np.testing.assert_array_equal(np.load(levels_file), perturbed)
    # Without the levels the converted checkpoint is refused, naming the option to add.
    with pytest.raises(ConfigError, match=f"--config.model.noise_levels={levels_file}"):
        restore_checkpoint(config, str(workdir))

    config = override(config, {"model.noise_levels": str(levels_file)})
    exp, restored = restore_checkpoint(config, str(workdir))
    labels = np.asarray(io["labels"]).astype(np.int64)
    with jax.default_matmul_precision("float32"):
        out = jax.jit(exp.model.apply)(restored.state.params, nhwc(io["x"]), jnp.asarray(labels))
    out = np.asarray(out).transpose(0, 3, 1, 2)
    # The reference divides its network body by sigmas[labels]: with the perturbed buffer its
    # output is the stored one rescaled by original / perturbed at each example's label.
    ratio = (original[labels] / perturbed[labels]).astype(np.float32)
    expected = io["output"] * ratio[:, None, None, None]
    assert np.all(per_sample_error(out, expected) < 1e-4)
    assert not np.allclose(ratio, 1.0)


def test_buffer_the_network_never_reads_is_accepted(tmp_path):
    # DDPM with the VP SDE does not divide by sigma: any buffer converts, the output is unchanged.
    config, _, state_dict, io = load_fixture("ddpm_vp_small")
    model = ddpm_from_config(config)
    state_dict = dict(state_dict, sigmas=np.asarray(state_dict["sigmas"]) * 3.0 + 1.0)
    params = ddpm.params_from_torch_state_dict(state_dict, model)
    with jax.default_matmul_precision("float32"):
        out = jax.jit(model.apply)(params, nhwc(io["x"]), jnp.asarray(io["labels"]))
    assert np.all(per_sample_error(np.asarray(out).transpose(0, 3, 1, 2), io["output"]) < 1e-4)
