"""DDPM U-Net: parity with the PyTorch reference, parameter counts, dtypes, weight conversion."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixture_utils import count, load_fixture, nhwc, per_sample_error

from scoresde_jax.models import MODELS, _torch_import, ddpm
from scoresde_jax.run.experiment import ddpm_from_config, model_from_config

NAMES = ["ddpm_vp_small", "ddpm_ve_small"]


@pytest.fixture(scope="module", params=NAMES)
def converted(request):
    config, meta, state_dict, io = load_fixture(request.param)
    model = ddpm_from_config(config)
    params = ddpm.params_from_torch_state_dict(state_dict, model)
    return request.param, model, params, meta, io, state_dict


def test_registered():
    assert MODELS["ddpm"] == "scoresde_jax.models.ddpm"
    config, *_ = load_fixture("ddpm_vp_small")
    assert isinstance(model_from_config(config), ddpm.DDPM)


def test_matches_reference(converted):
    _, model, params, _, io, _ = converted
    with jax.default_matmul_precision("float32"):
        out = jax.jit(model.apply)(params, nhwc(io["x"]), jnp.asarray(io["labels"]))
    assert out.dtype == jnp.float32
    out = np.asarray(out).transpose(0, 3, 1, 2)
    err = per_sample_error(out, io["output"])
    assert np.all(err < 1e-4), err


def test_parameter_count_matches_reference(converted):
    _, model, params, meta, _, _ = converted
    assert count(params) == meta["num_parameters"]
    size = model.image_size
    assert count(_torch_import.abstract_params(model, (1, size, size, 3))) == meta["num_parameters"]


@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameter_count(name):
    """The unreduced CIFAR-10 DDPM (nf 128, ch_mult 1,2,2,2, 2 blocks, attention at 16)."""
    config, meta, _, _ = load_fixture(name)
    full = meta["full_size"]
    for key, value in full["config_values"].items():
        section, field = key.split(".")
        config[section][field] = tuple(value) if isinstance(value, list) else value
    model = ddpm_from_config(config)
    assert (model.nf, tuple(model.ch_mult), model.num_res_blocks) == (128, (1, 2, 2, 2), 2)
    abstract = _torch_import.abstract_params(model, (1, 32, 32, 3))  # shapes only
    assert count(abstract) == full["num_parameters"] == 35_218_947


def test_bfloat16_close_to_float32():
    config, _, state_dict, io = load_fixture("ddpm_vp_small")
    model = ddpm_from_config(config)
    params = ddpm.params_from_torch_state_dict(state_dict, model)
    x, labels = nhwc(io["x"]), jnp.asarray(io["labels"])
    out32 = np.asarray(jax.jit(model.apply)(params, x, labels))
    out16 = jax.jit(model.clone(dtype=jnp.bfloat16).apply)(params, x, labels)
    assert out16.dtype == jnp.float32  # bfloat16 inside, float32 out
    diff = (np.asarray(out16) - out32).reshape(len(out32), -1)
    rms = np.sqrt(np.mean(diff**2, axis=1) / np.mean(out32.reshape(len(out32), -1) ** 2, axis=1))
    # bfloat16 keeps ~3 significant digits; through these nets the error grows to ~2 %.
    assert np.all(rms < 5e-2), rms
    assert np.all(per_sample_error(np.asarray(out16), out32) < 1e-1)


def test_config_dtype():
    config, *_ = load_fixture("ddpm_vp_small")
    config.model.dtype = "bfloat16"
    assert ddpm_from_config(config).dtype == jnp.bfloat16
    config.model.dtype = "int8"
    with pytest.raises(ValueError, match="model.dtype"):
        ddpm_from_config(config)


def test_dropout_only_in_training():
    model = ddpm.DDPM(nf=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.5)
    x = jnp.ones((2, 8, 8, 3)) * 0.5
    labels = jnp.array([1.0, 500.0])
    variables = model.init(jax.random.key(0), x, labels)
    # Make the zero-initialised last convolutions non-zero so dropout has an effect.
    variables = jax.tree.map(lambda p: p + 0.05, variables)
    apply = jax.jit(model.apply, static_argnames="train")
    ev1 = apply(variables, x, labels)
    ev2 = apply(variables, x, labels, train=False)
    tr = apply(variables, x, labels, train=True, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(ev1, ev2)
    assert not np.allclose(tr, ev1)


def test_scale_by_sigma_indexes_sigmas():
    model = ddpm.DDPM(
        nf=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), scale_by_sigma=True
    )
    x = jnp.full((3, 8, 8, 3), 0.3)
    variables = model.init(jax.random.key(0), x, jnp.array([0, 1, 2]))
    variables = jax.tree.map(lambda p: p + 0.05, variables)
    unscaled = model.clone(scale_by_sigma=False)
    ints = jnp.array([0, 7, 999])
    np.testing.assert_allclose(
        model.apply(variables, x, ints),
        unscaled.apply(variables, x, ints) / model.sigmas[[0, 7, 999], None, None, None],
        rtol=1e-6,
    )
    # Floating labels (e.g. placeholders during init) pick the nearest index.
    floats = jnp.array([4.6, 5.4, 5.0])
    np.testing.assert_allclose(
        model.apply(variables, x, floats),
        unscaled.apply(variables, x, floats) / model.sigmas[5],
        rtol=1e-6,
    )


# ----------------------------------------------------------------------------------------------
# Converter errors.


def test_module_prefix_is_accepted(converted):
    _, model, params, _, _, state_dict = converted
    wrapped = {f"module.{k}": v for k, v in state_dict.items()}
    again = ddpm.params_from_torch_state_dict(wrapped, model)
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_layouts(converted):
    name, _, params, _, _, state_dict = converted
    # all_modules.0 is the first Dense of the time embedding (Linear: (out, in)).
    np.testing.assert_array_equal(
        params["params"]["Dense_0"]["kernel"], state_dict["all_modules.0.weight"].T
    )
    # all_modules.2 is the input conv (OIHW -> HWIO).
    np.testing.assert_array_equal(
        params["params"]["Conv_0"]["kernel"],
        state_dict["all_modules.2.weight"].transpose(2, 3, 1, 0),
    )


def test_missing_key_is_reported():
    config, _, state_dict, _ = load_fixture("ddpm_vp_small")
    model = ddpm_from_config(config)
    del state_dict["all_modules.3.Conv_1.weight"]
    with pytest.raises(ValueError, match=r"missing keys \(1\): all_modules\.3\.Conv_1\.weight"):
        ddpm.params_from_torch_state_dict(state_dict, model)


def test_unexpected_key_is_reported():
    config, _, state_dict, _ = load_fixture("ddpm_vp_small")
    model = ddpm_from_config(config)
    state_dict["all_modules.99.weight"] = np.zeros((3,), np.float32)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): all_modules\.99\.weight"):
        ddpm.params_from_torch_state_dict(state_dict, model)


def test_shape_mismatch_is_reported():
    config, _, state_dict, _ = load_fixture("ddpm_vp_small")
    config.model.nf = 64  # the checkpoint has nf = 32
    model = ddpm_from_config(config)
    with pytest.raises(ValueError, match="shape mismatches"):
        ddpm.params_from_torch_state_dict(state_dict, model)


def test_wrong_sigmas_are_reported():
    config, _, state_dict, _ = load_fixture("ddpm_ve_small")
    config.model.sigma_max = 25
    model = ddpm_from_config(config)
    with pytest.raises(ValueError, match="sigmas buffer .* differs .*sigma_max=50.0"):
        ddpm.params_from_torch_state_dict(state_dict, model)
