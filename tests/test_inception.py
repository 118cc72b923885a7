"""FID Inception-v3: parity with pytorch-fid, weight files and lookup.

The parity fixture (pytorch-fid's FID Inception with random float16 weights, its inputs, features
and per-block channel means) lives in ``$SCORESDE_SHARED/fixtures/fid_inception_random``
(default: ``shared/`` beside the repository); the tests that need it are skipped when it is
absent. The ``.pth`` files are written by ``torch_files`` in PyTorch's own layouts, without it.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from torch_files import write_torch_file

from scoresde_jax.core.mesh import make_data_mesh
from scoresde_jax.io.state_dict import read_torch_state_dict
from scoresde_jax.metrics import (
    INCEPTION_WEIGHTS_NAME,
    INCEPTION_WEIGHTS_SHA256,
    INCEPTION_WEIGHTS_URL,
    FIDInceptionV3,
    find_inception_weights,
    load_inception_params,
    make_inception_fn,
    preprocess_images,
    resize_bilinear,
    variables_from_state_dict,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCORESDE_SHARED", REPO.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "fid_inception_random"

# torchvision's Inception3(num_classes=1008, aux_logits=False): 23,850,960 parameters, of which
# the fc layer (2048 * 1008 + 1008) is not on the pool_3 path; 17,216 batch-norm channels.
NUM_PARAMS = 23_850_960
NUM_PARAMS_POOL3 = 21_785_568
NUM_BATCH_STATS = 2 * 17_216


def fixture_file(name: str) -> Path:
    path = FIXTURE / name
    if not path.is_file():
        pytest.skip(
            f"parity fixture {path} is absent; set SCORESDE_SHARED to the folder holding fixtures/"
        )
    return path


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def per_image_rel_error(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def assert_trees_equal(a, b):
    fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        assert fa[key].dtype == fb[key].dtype, key
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=str(key))


@pytest.fixture(scope="module")
def fixture_weights() -> dict[str, np.ndarray]:
    return dict(np.load(fixture_file("weights_fp16.npz")))


@pytest.fixture(scope="module")
def fixture_io() -> dict[str, np.ndarray]:
    return dict(np.load(fixture_file("io.npz")))


@pytest.fixture(scope="module")
def variables():
    return load_inception_params(fixture_file("weights_fp16.npz"))


@pytest.fixture(scope="module")
def outputs(variables, fixture_io):
    """Our outputs and per-block channel means for the fixture's 299x299 and 32x32 batches."""
    model = FIDInceptionV3()
    apply = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))
    results = {}
    for size in ("299", "32"):
        out, state = apply(variables, nhwc(fixture_io[f"x{size}"]))
        means = {
            name: np.asarray(value[0]).mean(axis=(1, 2))
            for name, value in state["intermediates"].items()
        }
        results[size] = ({k: np.asarray(v) for k, v in out.items()}, means)
    return results


# ----------------------------------------------------------------------------------------------
# Structure.


def test_variable_tree_mirrors_the_state_dict():
    shapes = jax.eval_shape(
        FIDInceptionV3().init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32),
    )
    params, stats = shapes["params"], shapes["batch_stats"]
    assert count(params) == NUM_PARAMS
    assert count({k: v for k, v in params.items() if k != "fc"}) == NUM_PARAMS_POOL3
    assert count(stats) == NUM_BATCH_STATS
    assert params["fc"]["kernel"].shape == (2048, 1008)
    assert params["Mixed_7c"]["branch3x3dbl_3b"]["conv"]["kernel"].shape == (3, 1, 384, 384)
    assert stats["Mixed_5b"]["branch_pool"]["bn"]["var"].shape == (32,)

    keys_file = FIXTURE / "state_dict_keys.json"
    if not keys_file.is_file():
        pytest.skip(f"{keys_file} is absent; set SCORESDE_SHARED")
    # Every stored key of pytorch-fid's module maps to exactly one variable of ours: a state dict
    # of zeros with exactly those keys and shapes converts (strictly) without complaint.
    entries = [e for e in json.loads(keys_file.read_text()) if e["stored"]]
    assert len(entries) == 472
    zeros = {e["key"]: np.zeros(e["shape"], np.float16) for e in entries}
    converted = variables_from_state_dict(zeros)
    assert jax.tree.map(np.shape, converted) == jax.tree.map(
        np.shape, {"params": params, "batch_stats": stats}
    )


# ----------------------------------------------------------------------------------------------
# Parity with pytorch-fid.


@pytest.mark.parametrize("size", ["299", "32"])
def test_pool3_features_match_pytorch_fid(outputs, fixture_io, size):
    ours = outputs[size][0]["pool_3"]
    ref = fixture_io[f"features_{size}"]
    assert ours.shape == ref.shape == (8, 2048) and ours.dtype == np.float32
    # The requirement: per-image relative error <= 1e-4 (measured: 4e-7).
    rel = per_image_rel_error(ours, ref)
    assert rel.max() <= 1e-4, rel
    # The part that differs between images is ~1 % of the features (random deep ReLU networks
    # map all inputs close together), so it is compared on its own, with the mean over the 8
    # images removed from both sides (measured: 3e-5 at 299, 1.5e-5 at 32).
    centered = per_image_rel_error(ours - ours.mean(axis=0), ref - ref.mean(axis=0))
    assert centered.max() <= 1e-3, centered


@pytest.mark.parametrize("size", ["299", "32"])
def test_block_channel_means_match_pytorch_fid(outputs, fixture_io, size):
    means = outputs[size][1]
    for block, channels in enumerate((64, 192, 768, 2048)):
        ref = fixture_io[f"block{block}_channel_mean_{size}"]
        ours = means[f"block{block}"]
        assert ours.shape == ref.shape == (8, channels)
        # measured: 3.2e-6 (block0) down to 4e-7 (block3), relative to the largest mean
        assert np.abs(ours - ref).max() <= 3e-5 * np.abs(ref).max(), block
    # The global average pool of block3 is pool_3 itself.
    np.testing.assert_allclose(means["block3"], outputs[size][0]["pool_3"], rtol=1e-5, atol=1e-5)


def test_logits_are_the_1008_way_classifier_of_pool3(outputs, fixture_weights):
    out = outputs["299"][0]
    pool_3 = out["pool_3"].astype(np.float64)
    weight = fixture_weights["fc.weight"].astype(np.float64)
    bias = fixture_weights["fc.bias"].astype(np.float64)
    unbiased = pool_3 @ weight.T
    assert out["logits"].shape == out["logits_unbiased"].shape == (8, 1008)
    scale = np.abs(unbiased).max()
    assert np.abs(out["logits_unbiased"] - unbiased).max() <= 1e-6 * scale
    assert np.abs(out["logits"] - (unbiased + bias)).max() <= 1e-6 * scale
    np.testing.assert_array_equal(
        out["logits"], out["logits_unbiased"] + fixture_weights["fc.bias"].astype(np.float32)
    )


def test_resize_matches_pytorch_interpolate(fixture_io):
    """32 -> 299 as ``F.interpolate(mode="bilinear", align_corners=False)``, then ``2x - 1``."""
    ours = np.asarray(preprocess_images(nhwc(fixture_io["x32"][:1])))[0].transpose(2, 0, 1)
    ref = fixture_io["x32_img0_resized_normalized"]
    assert ours.shape == ref.shape == (3, 299, 299)
    # PyTorch's sampling positions and weights are reproduced exactly; its fused multiply-adds
    # leave one-ulp differences in some pixels (2.4e-7; positions rounded twice give 1.7e-6).
    assert np.abs(ours - ref).max() <= 3e-7


def test_resize_identity_and_agreement_with_jax_image():
    rng = np.random.default_rng(0)
    x = rng.random((2, 299, 299, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(resize_bilinear(jnp.asarray(x), (299, 299))), x)
    np.testing.assert_array_equal(np.asarray(preprocess_images(x, normalize=False)), x)
    # Half-pixel bilinear without antialiasing, up and down: jax.image.resize samples the same
    # points (with differently rounded weights).
    for shape in [(2, 32, 45, 3), (1, 600, 500, 3)]:
        y = rng.random(shape, dtype=np.float32)
        ours = np.asarray(resize_bilinear(jnp.asarray(y), (299, 299)))
        theirs = np.asarray(
            jax.image.resize(y, (shape[0], 299, 299, 3), "bilinear", antialias=False)
        )
        assert np.abs(ours - theirs).max() <= 1e-6, shape


def test_uint8_images_are_scaled_by_255():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        np.asarray(preprocess_images(u8)),
        np.asarray(preprocess_images(u8.astype(np.float32) / np.float32(255))),
    )
    with pytest.raises(ValueError, match="too small"):
        preprocess_images(np.zeros((1, 40, 40, 3), np.float32), resize=False)


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="NHWC"):
        preprocess_images(np.zeros((1, 3, 32, 32), np.float32))


# ----------------------------------------------------------------------------------------------
# The compiled feature function.


def test_inception_fn_without_mesh(variables, fixture_io, outputs):
    fn = make_inception_fn(variables)
    pool_3, logits = fn(nhwc(fixture_io["x32"][:2]))
    assert pool_3.shape == (2, 2048) and logits.shape == (2, 1008)
    assert per_image_rel_error(np.asarray(pool_3), fixture_io["features_32"][:2]).max() <= 1e-4
    ref_logits = outputs["32"][0]["logits"][:2]
    assert np.abs(np.asarray(logits) - ref_logits).max() <= 1e-5 * np.abs(ref_logits).max()


def test_inception_fn_shards_and_pads_uneven_batches(variables, fixture_io, outputs):
    if jax.device_count() < 2:
        pytest.skip("needs 2 devices (conftest forces 8 host devices)")
    mesh = make_data_mesh(2)
    fn = make_inception_fn(variables, mesh, unbiased_logits=True)
    pool_3, logits = fn(nhwc(fixture_io["x299"][:3]))  # padded to 4 inside, cut back to 3
    assert pool_3.shape == (3, 2048) and logits.shape == (3, 1008)
    assert per_image_rel_error(np.asarray(pool_3), fixture_io["features_299"][:3]).max() <= 1e-4
    ref_logits = outputs["299"][0]["logits_unbiased"][:3]
    assert np.abs(np.asarray(logits) - ref_logits).max() <= 1e-5 * np.abs(ref_logits).max()


# ----------------------------------------------------------------------------------------------
# Weight files.


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_fixture_weights_load_the_same_from_pth_and_npz(
    tmp_path, fixture_weights, variables, legacy
):
    state_dict = dict(fixture_weights)  # float16, as stored
    # Entries the official file also carries and the loader must ignore.
    for name in [k[: -len(".running_var")] for k in fixture_weights if k.endswith("running_var")]:
        state_dict[f"{name}.num_batches_tracked"] = np.array(0, np.int64)
    state_dict["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float16)
    path = write_torch_file(tmp_path / "inception.pth", OrderedDict(state_dict), legacy=legacy)
    assert len(read_torch_state_dict(path)) == 472 + 94 + 1
    assert_trees_equal(load_inception_params(path), variables)


def test_strict_keys_and_shapes(fixture_weights):
    weights = dict(fixture_weights)
    missing = {k: v for k, v in weights.items() if k != "Mixed_6c.branch7x7_2.conv.weight"}
    with pytest.raises(
        ValueError, match=r"missing keys \(1\): Mixed_6c\.branch7x7_2\.conv\.weight"
    ):
        variables_from_state_dict(missing)
    extra = {**weights, "Mixed_8a.conv.weight": np.zeros(3, np.float16)}
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): Mixed_8a\.conv\.weight"):
        variables_from_state_dict(extra)
    wrong = {**weights, "fc.bias": np.zeros(1000, np.float16)}
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): fc\.bias: \(1000,\)"):
        variables_from_state_dict(wrong)


def test_official_file_name_requires_the_official_hash(tmp_path):
    assert INCEPTION_WEIGHTS_SHA256.startswith(INCEPTION_WEIGHTS_NAME.split("-")[-1][:8])
    path = write_torch_file(
        tmp_path / INCEPTION_WEIGHTS_NAME, OrderedDict(w=np.zeros(3, np.float32))
    )
    with pytest.raises(ValueError, match="SHA-256"):
        load_inception_params(path)
    # Without the check the file is read, and fails on its keys instead.
    with pytest.raises(ValueError, match="does not match this FID Inception-v3"):
        load_inception_params(path, verify_sha256=False)


def test_find_inception_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("SCORESDE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError) as err:
        find_inception_weights()
    message = str(err.value)
    assert f"-o ~/.cache/scoresde_jax/{INCEPTION_WEIGHTS_NAME} {INCEPTION_WEIGHTS_URL}" in message
    assert "curl -L" in message

    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match=str(cache / INCEPTION_WEIGHTS_NAME)):
        find_inception_weights(cache_dir=cache)
    cache.mkdir()
    (cache / INCEPTION_WEIGHTS_NAME).write_bytes(b"")
    assert find_inception_weights(cache_dir=cache) == cache / INCEPTION_WEIGHTS_NAME

    other = tmp_path / "elsewhere.pth"
    other.write_bytes(b"")
    monkeypatch.setenv("SCORESDE_INCEPTION_WEIGHTS", str(other))
    assert find_inception_weights(cache_dir=cache) == other
    assert find_inception_weights(cache / INCEPTION_WEIGHTS_NAME) == cache / INCEPTION_WEIGHTS_NAME
    with pytest.raises(FileNotFoundError, match="the given path"):
        find_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setenv("SCORESDE_INCEPTION_WEIGHTS", str(tmp_path / "gone.pth"))
    with pytest.raises(FileNotFoundError, match="SCORESDE_INCEPTION_WEIGHTS"):
        find_inception_weights()
