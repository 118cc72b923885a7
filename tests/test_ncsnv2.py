"""NCSNv2 and NCSN RefineNets: parity with the PyTorch reference, counts, dtypes, conversion."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixture_utils import count, load_fixture, nhwc, per_sample_error

from scoresde_jax.models import MODELS, _torch_import, ncsnv2
from scoresde_jax.run.experiment import model_from_config, ncsnv2_from_config

NAMES = ["ncsnv2_64_small", "ncsnv2_128_small", "ncsnv2_256_small", "ncsn_small"]


@pytest.fixture(scope="module", params=NAMES)
def converted(request):
    config, meta, state_dict, io = load_fixture(request.param)
    model = ncsnv2_from_config(config)
    params = ncsnv2.params_from_torch_state_dict(state_dict, model)
    return request.param, model, params, meta, io, state_dict


@pytest.mark.parametrize(
    ("name", "cls"),
    [("ncsnv2_64", ncsnv2.NCSNv2), ("ncsnv2_128", ncsnv2.NCSNv2), ("ncsn", ncsnv2.NCSN)],
)
def test_registered(name, cls):
    assert MODELS[name] == "scoresde_jax.models.ncsnv2"
    config, *_ = load_fixture("ncsn_small" if name == "ncsn" else "ncsnv2_64_small")
    config.model.name = name
    model = model_from_config(config)
    assert isinstance(model, cls)
    if cls is ncsnv2.NCSNv2:
        assert model.architecture == name


def test_matches_reference(converted):
    _, model, params, _, io, _ = converted
    with jax.default_matmul_precision("float32"):
        out = jax.jit(model.apply)(params, nhwc(io["x"]), jnp.asarray(io["labels"]))
    assert out.dtype == jnp.float32
    out = np.asarray(out).transpose(0, 3, 1, 2)
    err = per_sample_error(out, io["output"])
    assert np.all(err < 1e-4), err


def test_parameter_count_matches_reference(converted):
    _, _, params, meta, _, _ = converted
    assert count(params) == meta["num_parameters"]


@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameter_count(name):
    """nf = 128 as in the CIFAR-10 / LSUN configs, counted from shapes only."""
    config, meta, _, _ = load_fixture(name)
    full = meta["full_size"]
    for key, value in full["config_values"].items():
        section, field = key.split(".")
        config[section][field] = value
    model = ncsnv2_from_config(config)
    assert model.nf == 128
    abstract = _torch_import.abstract_params(model, (1, 32, 32, 3))
    assert count(abstract) == full["num_parameters"]


def test_bfloat16_close_to_float32():
    config, _, state_dict, io = load_fixture("ncsnv2_64_small")
    model = ncsnv2_from_config(config)
    params = ncsnv2.params_from_torch_state_dict(state_dict, model)
    x, labels = nhwc(io["x"]), jnp.asarray(io["labels"])
    out32 = np.asarray(jax.jit(model.apply)(params, x, labels))
    out16 = jax.jit(model.clone(dtype=jnp.bfloat16).apply)(params, x, labels)
    assert out16.dtype == jnp.float32  # bfloat16 inside, float32 out
    diff = (np.asarray(out16) - out32).reshape(len(out32), -1)
    rms = np.sqrt(np.mean(diff**2, axis=1) / np.mean(out32.reshape(len(out32), -1) ** 2, axis=1))
    # bfloat16 keeps ~3 significant digits; through these nets the error grows to ~2 %.
    assert np.all(rms < 5e-2), rms
    assert np.all(per_sample_error(np.asarray(out16), out32) < 1e-1)


def test_float_labels_round_to_indices():
    config, _, state_dict, io = load_fixture("ncsn_small")
    model = ncsnv2_from_config(config)
    variables = ncsnv2.params_from_torch_state_dict(state_dict, model)
    x, labels = nhwc(io["x"]), np.asarray(io["labels"])
    apply = jax.jit(model.apply)
    ints = apply(variables, x, jnp.asarray(labels, jnp.int32))
    floats = apply(variables, x, jnp.asarray(labels + 0.3, jnp.float32))
    np.testing.assert_array_equal(ints, floats)


def test_unknown_names():
    with pytest.raises(ValueError, match="architecture"):
        ncsnv2.NCSNv2(architecture="ncsnv2_512", nf=4).init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 3)), jnp.array([0])
        )
    config, *_ = load_fixture("ncsnv2_64_small")
    config.model.name = "ddpm"
    with pytest.raises(ValueError, match="not an NCSN model"):
        ncsnv2_from_config(config)


def test_bilinear_resize_matches_align_corners():
    """Upsampling 3 -> 5 with aligned corners hits the inputs at 0, 2, 4 and averages between."""
    x = jnp.arange(9.0, dtype=jnp.float32).reshape(1, 3, 3, 1)
    y = np.asarray(ncsnv2.resize(x, (5, 5)))[0, :, :, 0]
    np.testing.assert_allclose(y[::2, ::2], np.asarray(x)[0, :, :, 0])
    np.testing.assert_allclose(y[1, 1], np.mean(np.asarray(x)[0, :2, :2, 0]))
    np.testing.assert_array_equal(ncsnv2.resize(x, (3, 3)), x)


# ----------------------------------------------------------------------------------------------
# Converter.


def test_module_prefix_and_layouts():
    config, _, state_dict, _ = load_fixture("ncsn_small")
    model = ncsnv2_from_config(config)
    params = ncsnv2.params_from_torch_state_dict(
        {f"module.{k}": v for k, v in state_dict.items()}, model
    )
    np.testing.assert_array_equal(
        params["params"]["res2_0"]["conv2"]["conv"]["kernel"],
        state_dict["res2.0.conv2.conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        params["params"]["refine1"]["crp"]["norms_1"]["embed"]["embedding"],
        state_dict["refine1.crp.norms.1.embed.weight"],
    )
    np.testing.assert_array_equal(
        params["params"]["refine2"]["adapt_convs_1"]["2_2_conv"]["kernel"],
        state_dict["refine2.adapt_convs.1.2_2_conv.weight"].transpose(2, 3, 1, 0),
    )


def test_missing_and_unexpected_keys_are_reported():
    config, _, state_dict, _ = load_fixture("ncsnv2_64_small")
    model = ncsnv2_from_config(config)
    broken = dict(state_dict)
    del broken["refine3.msf.convs.1.bias"]
    broken["refine3.msf.convs.2.bias"] = np.zeros((12,), np.float32)
    with pytest.raises(ValueError) as info:
        ncsnv2.params_from_torch_state_dict(broken, model)
    message = str(info.value)
    assert "missing keys (1): refine3.msf.convs.1.bias" in message
    assert "unexpected keys (1): refine3.msf.convs.2.bias" in message


def test_wrong_architecture_is_reported():
    config, _, state_dict, _ = load_fixture("ncsnv2_128_small")
    config.model.name = "ncsnv2_64"  # the checkpoint is an ncsnv2_128
    model = ncsnv2_from_config(config)
    with pytest.raises(ValueError, match="does not match this NCSNv2"):
        ncsnv2.params_from_torch_state_dict(state_dict, model)


def test_shape_mismatch_and_sigmas_are_reported():
    config, _, state_dict, _ = load_fixture("ncsnv2_64_small")
    config.model.nf = 16
    with pytest.raises(ValueError, match="shape mismatches"):
        ncsnv2.params_from_torch_state_dict(state_dict, ncsnv2_from_config(config))
    config.model.nf = 12
    config.model.num_scales = 100
    # The message names the config values that reproduce the checkpoint's buffer.
    with pytest.raises(ValueError, match="232 levels against num_scales=100.*num_scales=232"):
        ncsnv2.params_from_torch_state_dict(state_dict, ncsnv2_from_config(config))
