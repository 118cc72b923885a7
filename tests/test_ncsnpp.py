"""NCSN++ / DDPM++: parity with the PyTorch reference, every option combination, conversion.

The parity fixtures (random weights, inputs and outputs of ``score_sde_pytorch``) live in
``$SCORESDE_SHARED/fixtures`` (default: ``shared/`` beside the repository); the tests that need
them are skipped when that folder is absent.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import serialization
from train_utils import xla_flags

from scoresde_jax.io.state_dict import ConversionError
from scoresde_jax.models import layers
from scoresde_jax.models.ncsnpp import (
    NCSNpp,
    abstract_variables,
    count_params,
    params_from_torch_state_dict,
    torch_trainable_keys,
)
from scoresde_jax.modes import convert
from scoresde_jax.run.checkpoint import Checkpointer
from scoresde_jax.run.experiment import build_experiment, model_from_config

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCORESDE_SHARED", REPO.parent / "shared"))
FIXTURES = ("ncsnpp_ve_small", "ddpmpp_vp_small")


def fixture_dir(name: str) -> Path:
    path = SHARED / "fixtures" / name
    if not (path / "state_dict.npz").is_file():
        pytest.skip(
            f"parity fixture {path} is absent; set SCORESDE_SHARED to the folder holding fixtures/"
        )
    return path


def fixture_config(name: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads((fixture_dir(name) / "config.json").read_text()))


@functools.cache
def load_fixture(name: str):
    """(config, model, variables, x NHWC, labels, reference output NHWC, jitted apply)."""
    path = fixture_dir(name)
    config = fixture_config(name)
    model = model_from_config(config)
    with np.load(path / "state_dict.npz") as f:
        state_dict = {k: f[k] for k in f.files}
    variables = params_from_torch_state_dict(state_dict, model)
    with np.load(path / "io.npz") as f:
        x = np.transpose(f["x"], (0, 2, 3, 1))
        labels = f["labels"]
        out = np.transpose(f["output"], (0, 2, 3, 1))
    return config, model, variables, x, labels, out, jax.jit(model.apply)


def per_sample_rel_err(out, ref) -> np.ndarray:
    """Max abs error of each sample relative to that sample's max |ref|."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    b = ref.shape[0]
    err = np.abs(out - ref).reshape(b, -1).max(1)
    return err / np.abs(ref).reshape(b, -1).max(1)


# ----------------------------------------------------------------------------------------------
# Parity with the PyTorch reference.


@pytest.mark.parametrize("name", FIXTURES)
def test_matches_pytorch_reference(name):
    _, _, variables, x, labels, ref, apply = load_fixture(name)
    out = apply(variables, x, labels)
    assert out.dtype == jnp.float32 and out.shape == ref.shape
    err = per_sample_rel_err(out, ref)
    assert err.max() < 1e-4, f"{name}: per-sample relative errors {err}"


@pytest.mark.parametrize("name", FIXTURES)
def test_parameter_count_matches_fixture(name):
    path = fixture_dir(name)
    meta = json.loads((path / "meta.json").read_text())
    model = model_from_config(fixture_config(name))
    assert isinstance(model, NCSNpp)
    assert count_params(model) == meta["num_parameters"]
    keys = json.loads((path / "state_dict_keys.json").read_text())
    assert len(keys) == meta["num_state_dict_keys"]
    trainable = torch_trainable_keys([k["key"] for k in keys], model)
    assert len(trainable) == sum(k["is_parameter"] for k in keys) - (name == "ncsnpp_ve_small")


def cifar10_model(**overrides) -> NCSNpp:
    base = dict(nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,))
    return NCSNpp(**(base | overrides))


def test_full_size_parameter_counts():
    # NCSN++ continuous (VE) and DDPM++ continuous (VP) on CIFAR-10, counted without allocating.
    ncsnpp_ve = cifar10_model(
        resblock_type="biggan", fir=True, progressive_input="residual", embedding_type="fourier"
    )
    ddpmpp_vp = cifar10_model(
        resblock_type="biggan",
        fir=False,
        progressive_input="none",
        embedding_type="positional",
        centered=True,
        scale_by_sigma=False,
    )
    assert count_params(ncsnpp_ve) == 62_758_915
    assert count_params(ddpmpp_vp) == 61_804_419


# ----------------------------------------------------------------------------------------------
# Every architecture option builds and runs.

COMBOS = [
    (prog, pin, comb, rb, emb)
    for prog, pin, comb, rb, emb in itertools.product(
        ("none", "output_skip", "residual"),
        ("none", "input_skip", "residual"),
        ("sum", "cat"),
        ("ddpm", "biggan"),
        ("fourier", "positional"),
    )
    if comb == "sum" or pin == "input_skip"  # the combine method only matters for input_skip
]


@pytest.mark.parametrize("prog,pin,comb,rb,emb", COMBOS)
def test_every_option_combination_runs(prog, pin, comb, rb, emb):
    # Alternate FIR and the naive resamplers across combinations (both are covered for each
    # progressive mode and resblock type).
    fir = (COMBOS.index((prog, pin, comb, rb, emb)) // 2) % 2 == 0
    model = NCSNpp(
        image_size=16,
        nf=8,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        progressive=prog,
        progressive_input=pin,
        progressive_combine=comb,
        resblock_type=rb,
        embedding_type=emb,
        fir=fir,
        scale_by_sigma=emb == "fourier",
        init_scale=0.5,
        num_scales=10,
    )
    x = jnp.linspace(0.0, 1.0, 2 * 16 * 16 * 3).reshape(2, 16, 16, 3)
    labels = jnp.array([0.1, 20.0]) if emb == "fourier" else jnp.array([2.0, 7.0])
    # RBG keys: far cheaper to compile than threefry, and these models run op by op (a jit
    # compile per combination would cost more than the run itself).
    key = jax.random.key(0, impl="rbg")
    variables = model.init(key, x, labels)
    out = model.apply(variables, x, labels, train=True, rngs={"dropout": key})
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))


def test_unknown_options_are_rejected():
    x, labels = jnp.zeros((1, 16, 16, 3)), jnp.ones((1,))
    for bad in (
        {"progressive": "skip"},
        {"resblock_type": "resnet"},
        {"conv_size": 5},
        {"attention_type": "legacy"},
    ):
        with pytest.raises(ValueError):
            model = NCSNpp(image_size=16, nf=8, ch_mult=(1, 2), **bad)
            jax.eval_shape(model.init, jax.random.PRNGKey(0), x, labels)


# ----------------------------------------------------------------------------------------------
# Mixed precision.


def test_bfloat16_compute_matches_float32():
    _, model, variables, x, labels, ref, apply = load_fixture("ddpmpp_vp_small")
    bf16 = model.clone(dtype=jnp.bfloat16)
    abstract = jax.eval_shape(bf16.init, jax.random.PRNGKey(0), x, labels)
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
    out = jax.jit(bf16.apply)(variables, x, labels)
    assert out.dtype == jnp.float32
    err = per_sample_rel_err(out, apply(variables, x, labels))
    assert err.max() < 0.05, err


# ----------------------------------------------------------------------------------------------
# Layers: FIR resampling against its definition.


def upfirdn2d_reference(x, k, up, down, pad):
    """Zero insertion, padding, true convolution, decimation: the definition, in numpy."""
    n, h, w, c = x.shape
    z = np.zeros((n, h * up, w * up, c), x.dtype)
    z[:, ::up, ::up] = x
    z = np.pad(z, ((0, 0), pad, pad, (0, 0)))
    kh, kw = k.shape
    oh, ow = z.shape[1] - kh + 1, z.shape[2] - kw + 1
    flipped = k[::-1, ::-1]
    out = np.zeros((n, oh, ow, c), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += flipped[i, j] * z[:, i : i + oh, j : j + ow]
    return out[:, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (2, 2))])
@pytest.mark.parametrize("kind", ["general", "separable", "separable_traced"])
def test_upfirdn2d_matches_definition(up, down, pad, kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    # Asymmetric kernels, so flips matter. A rank-one numpy kernel takes the sliced-sum path, a
    # general or traced one the depthwise convolution.
    if kind == "general":
        k = rng.standard_normal((4, 4)).astype(np.float32)
    else:
        k = np.outer(rng.standard_normal(4), rng.standard_normal(4)).astype(np.float32)
    kernel = jnp.asarray(k) if kind == "separable_traced" else k
    out = layers.upfirdn2d(jnp.asarray(x), kernel, up=up, down=down, pad=pad)
    np.testing.assert_allclose(out, upfirdn2d_reference(x, k, up, down, pad), atol=1e-5)


def test_fused_resampling_convs_with_box_filter_equal_their_composition():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 5))

    def conv(v):
        return jax.lax.conv_general_dilated(
            v, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    np.testing.assert_allclose(
        layers.upsample_conv_2d(x, w, (1, 1)), conv(layers.naive_upsample_2d(x)), atol=1e-4
    )
    np.testing.assert_allclose(
        layers.conv_downsample_2d(x, w, (1, 1)), layers.naive_downsample_2d(conv(x)), atol=1e-4
    )


# ----------------------------------------------------------------------------------------------
# Conversion.


@pytest.fixture(scope="module")
def ve_state_dict():
    with np.load(fixture_dir("ncsnpp_ve_small") / "state_dict.npz") as f:
        return {k: f[k] for k in f.files}


def test_converter_names_missing_unexpected_and_misshapen_keys(ve_state_dict):
    model = load_fixture("ncsnpp_ve_small")[1]
    prefixed = {f"module.{k}": v for k, v in ve_state_dict.items()}
    params_from_torch_state_dict(prefixed, model)  # the DataParallel prefix is removed

    missing = dict(ve_state_dict)
    del missing["all_modules.4.Conv_0.bias"]
    with pytest.raises(ConversionError, match=r"missing keys \(1\): all_modules\.4\.Conv_0\.bias"):
        params_from_torch_state_dict(missing, model)

    extra = dict(ve_state_dict, **{"all_modules.4.Conv_9.weight": np.zeros(3, np.float32)})
    with pytest.raises(ConversionError, match=r"unexpected keys \(1\): all_modules\.4\.Conv_9"):
        params_from_torch_state_dict(extra, model)

    stray = dict(ve_state_dict, foo=np.zeros(3, np.float32))
    with pytest.raises(ConversionError, match=r"unexpected keys \(1\): foo"):
        params_from_torch_state_dict(stray, model)

    wrong = dict(ve_state_dict)
    wrong["all_modules.3.weight"] = wrong["all_modules.3.weight"][:, :2]
    with pytest.raises(ConversionError, match=r"shape mismatches \(1\): all_modules\.3\.weight"):
        params_from_torch_state_dict(wrong, model)

    # A checkpoint for another configuration: every surplus or shifted module is named.
    with pytest.raises(ConversionError, match="missing keys"):
        params_from_torch_state_dict(ve_state_dict, model.clone(num_res_blocks=2))


def test_used_sigmas_buffer_must_match_the_config():
    # The fixture's sigmas were perturbed; a network that divides by them must refuse them.
    config = fixture_config("ddpmpp_vp_small")
    config.model.scale_by_sigma = True
    model = model_from_config(config)
    with np.load(fixture_dir("ddpmpp_vp_small") / "state_dict.npz") as f:
        state_dict = {k: f[k] for k in f.files}
    with pytest.raises(ConversionError, match="sigmas"):
        params_from_torch_state_dict(state_dict, model)
    params_from_torch_state_dict(state_dict, model, check_sigmas=False)
    state_dict["sigmas"] = model.sigmas()
    params_from_torch_state_dict(state_dict, model)


def test_torch_checkpoint_converts_ema_adam_moments_and_step(ve_state_dict):
    config, model, variables, *_ = load_fixture("ncsnpp_ve_small")
    optimizer = build_experiment(config).optimizer
    keys = list(ve_state_dict)
    trainable = torch_trainable_keys(keys, model)
    assert "sigmas" not in trainable and "all_modules.0.W" not in trainable
    param_keys = [k for k in keys if k != "sigmas"]
    ckpt = {
        "model": {f"module.{k}": v for k, v in ve_state_dict.items()},
        "ema": [2 * ve_state_dict[k] for k in trainable],
        # Adam state by index into model.parameters(); the frozen Fourier W (index 0) has none.
        "optimizer": {
            "state": {
                i: {"exp_avg": 3 * ve_state_dict[k], "exp_avg_sq": 4 * ve_state_dict[k]}
                for i, k in enumerate(param_keys)
                if i > 0
            },
            "param_groups": [{"params": list(range(len(param_keys)))}],
        },
        "step": 1234,
    }
    state = convert.state_from_torch(ckpt, model, optimizer)
    assert int(state.step) == 1234
    p, ema = variables["params"], state.ema_params["params"]
    np.testing.assert_array_equal(ema["Dense_0"]["kernel"], 2 * p["Dense_0"]["kernel"])
    np.testing.assert_array_equal(
        ema["GaussianFourierProjection_0"]["W"], p["GaussianFourierProjection_0"]["W"]
    )
    adam = state.opt_state[1][0]
    assert int(adam.count) == 1234
    conv = adam.mu["params"]["ResnetBlockBigGANpp_0"]["Conv_0"]["kernel"]
    np.testing.assert_allclose(conv, 3 * p["ResnetBlockBigGANpp_0"]["Conv_0"]["kernel"])
    np.testing.assert_array_equal(adam.nu["params"]["GaussianFourierProjection_0"]["W"], 0)


def restore_and_run(name, workdir):
    config, _, _, x, labels, _, apply = load_fixture(name)
    exp = build_experiment(config)
    ckpt = Checkpointer(str(workdir), read_only=True)
    state = ckpt.restore(exp.abstract_target())
    ckpt.close()
    return state, apply(jax.device_get(state.ema_params), x, labels)


def test_convert_cli_roundtrip(tmp_path):
    name = "ncsnpp_ve_small"
    path = fixture_dir(name)
    config, _, _, x, labels, ref, _ = load_fixture(name)
    config_file = tmp_path / "fixture_config.py"
    config_file.write_text(
        "import json\nimport ml_collections\n\n\ndef get_config():\n"
        f"    return ml_collections.ConfigDict(json.load(open({str(path / 'config.json')!r})))\n"
    )
    workdir = tmp_path / "run"
    env = dict(os.environ, XLA_FLAGS=xla_flags(1))
    cmd = [sys.executable, "-m", "scoresde_jax.convert", f"--config={config_file}"]
    cmd += ["--source=torch", f"--checkpoint={path / 'state_dict.npz'}", f"--workdir={workdir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Converted" in proc.stdout
    state, out = restore_and_run(name, workdir)
    assert int(state.step) == 0
    assert per_sample_rel_err(out, ref).max() < 1e-4


def test_flax_checkpoint_roundtrip(tmp_path):
    """An original score_sde checkpoint (msgpack of its State) converts, EMA and Adam included."""
    config = fixture_config("ddpmpp_vp_small")
    # A narrow, shallow network keeps the Orbax round trip quick; the tree layout is the same.
    config.model.update(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,))
    config.data.image_size = 16
    model = model_from_config(config)
    rng = np.random.default_rng(3)
    tree = jax.tree.map(
        lambda a: rng.standard_normal(a.shape).astype(np.float32),
        abstract_variables(model)["params"],
    )
    original_state = {
        "step": np.asarray(77),
        "optimizer": {
            "target": jax.tree.map(lambda a: a + 1.0, tree),
            "state": {
                "step": np.asarray(77),
                "param_states": jax.tree.map(
                    lambda a: {"grad_ema": 0.5 * a, "grad_sq_ema": a * a}, tree
                ),
            },
        },
        "lr": np.asarray(2e-4),
        "model_state": {},
        "ema_rate": np.asarray(0.9999),
        "params_ema": tree,
        "rng": np.zeros(2, np.uint32),
    }
    ckpt_file = tmp_path / "checkpoint_26"
    ckpt_file.write_bytes(serialization.msgpack_serialize(original_state))
    workdir = str(tmp_path / "run")
    convert.convert_checkpoint(config, source="flax", checkpoint=str(ckpt_file), workdir=workdir)

    exp = build_experiment(config)
    ckpt = Checkpointer(workdir, read_only=True)
    restored = jax.device_get(ckpt.restore(exp.abstract_target()))
    ckpt.close()
    assert int(restored.step) == 77
    expected = {
        "params": jax.tree.map(lambda a: a + 1.0, tree),
        "ema_params": tree,
        "mu": jax.tree.map(lambda a: 0.5 * a, tree),
        "nu": jax.tree.map(lambda a: a * a, tree),
    }
    adam = restored.opt_state[1][0]
    assert int(adam.count) == 77
    got = {
        "params": restored.params["params"],
        "ema_params": restored.ema_params["params"],
        "mu": adam.mu["params"],
        "nu": adam.nu["params"],
    }
    jax.tree.map(np.testing.assert_allclose, got, expected)
    with pytest.raises(FileExistsError):
        convert.convert_checkpoint(
            config, source="flax", checkpoint=str(ckpt_file), workdir=workdir
        )
