"""PyTorch files without PyTorch (``scoresde_jax.io.state_dict``): the reader, and a full
``score_sde_pytorch`` checkpoint that converts with ``torch`` unimportable.

The ``.pth`` files are written by ``torch_files`` in ``torch.save``'s layouts. Where PyTorch is
installed, the reader is also compared with ``torch.load`` on a file ``torch.save`` wrote.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from torch_files import View, op_global, op_str, op_tuple, write_torch_file

from scoresde_jax.io.state_dict import read_torch_file, read_torch_state_dict
from scoresde_jax.models.ncsnpp import torch_trainable_keys
from scoresde_jax.modes import convert
from scoresde_jax.run.experiment import build_experiment

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCORESDE_SHARED", REPO.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "ncsnpp_ve_small"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_read_torch_file_exactly(tmp_path, legacy):
    rng = np.random.default_rng(2)
    conv = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    half = rng.standard_normal(7).astype(np.float16)
    shared = rng.standard_normal(6).astype(np.float64)
    storages = {
        "0": conv.reshape(-1),
        "1": half,
        "2": np.array([12], np.int64),
        "3": shared,
        "4": np.array([0, 1, 255], np.uint8),
    }
    tensors = OrderedDict(
        [
            ("conv.weight", View("0", 0, (2, 3, 4, 5), (60, 20, 5, 1))),
            ("bn.weight", View("1", 0, (7,), (1,))),
            ("bn.num_batches_tracked", View("2", 0, (), ())),
            ("transposed", View("3", 0, (3, 2), (1, 3))),  # a non-contiguous view
            ("tail", View("3", 2, (4,), (1,))),  # shares storage "3", from element 2 on
            ("window", View("0", 10, (2, 3), (5, 1))),
            ("bytes", View("4", 0, (3,), (1,))),
        ]
    )
    path = write_torch_file(tmp_path / "small.pth", tensors, storages, legacy=legacy)
    got = read_torch_state_dict(path)
    expected = {
        "conv.weight": conv,
        "bn.weight": half,
        "bn.num_batches_tracked": np.array(12, np.int64),
        "transposed": shared.reshape(2, 3).T,
        "tail": shared[2:],
        "window": conv.reshape(-1)[10:20].reshape(2, 5)[:, :3],
        "bytes": np.array([0, 1, 255], np.uint8),
    }
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_reader_refuses_other_globals(tmp_path):
    marker = tmp_path / "marker"
    payload = (
        b"\x80\x02"
        + op_global("os", "system")
        + op_tuple(op_str(f"touch {marker}"))
        + b"R."  # os.system("touch ...") if the reader trusted the pickle
    )
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    with pytest.raises(Exception, match="refusing to load os.system|Unsupported|global"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_reader_refuses_out_of_bounds_views(tmp_path):
    storages = {"0": np.arange(4, dtype=np.float32)}
    tensors = OrderedDict(w=View("0", 2, (3,), (1,)))  # elements 2..4 of a 4-element storage
    path = write_torch_file(tmp_path / "bad.pth", tensors, storages)
    with pytest.raises(ValueError):
        read_torch_state_dict(path)


# ----------------------------------------------------------------------------------------------
# A training checkpoint of score_sde_pytorch.


@pytest.fixture(scope="module")
def fixture_checkpoint():
    """The NCSN++ fixture's weights as score_sde_pytorch saves a training state, and the model."""
    if not (FIXTURE / "state_dict.npz").is_file():
        pytest.skip(f"parity fixture {FIXTURE} is absent; set SCORESDE_SHARED")
    config = ml_collections.ConfigDict(json.loads((FIXTURE / "config.json").read_text()))
    exp = build_experiment(config)
    with np.load(FIXTURE / "state_dict.npz") as f:
        sd = {k: f[k] for k in f.files}
    trainable = torch_trainable_keys(list(sd), exp.model)
    param_keys = [k for k in sd if k != "sigmas"]
    ckpt = {
        "optimizer": {
            "state": {
                i: {"step": 1234.0, "exp_avg": 3 * sd[k], "exp_avg_sq": 4 * sd[k]}
                for i, k in enumerate(param_keys)
                if i > 0  # the frozen Fourier W has no Adam state
            },
            "param_groups": [
                {"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
                | {"amsgrad": False, "foreach": None, "params": list(range(len(param_keys)))}
            ],
        },
        "model": OrderedDict((f"module.{k}", v) for k, v in sd.items()),
        "ema": {
            "decay": 0.999,
            "num_updates": 1234,
            "shadow_params": [2 * sd[k] for k in trainable],
        },
        "step": 1234,
    }
    return ckpt, exp


def _assert_same_checkpoint(got, ckpt):
    assert list(got["model"]) == list(ckpt["model"]) and got["step"] == ckpt["step"]
    pairs = list(zip(got["model"].values(), ckpt["model"].values(), strict=True))
    pairs += zip(got["ema"], ckpt["ema"]["shadow_params"], strict=True)
    state, expected = got["optimizer"]["state"], ckpt["optimizer"]["state"]
    assert list(state) == list(expected)
    pairs += [(state[i][k], expected[i][k]) for i in expected for k in ("exp_avg", "exp_avg_sq")]
    for ours, theirs in pairs:
        assert ours.dtype == np.float32  # as torch's path gave them (sigmas included)
        np.testing.assert_array_equal(ours, np.asarray(theirs, np.float32))
    assert got["optimizer"]["param_groups"] == ckpt["optimizer"]["param_groups"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_training_checkpoint_converts_without_torch(
    tmp_path, monkeypatch, fixture_checkpoint, legacy
):
    ckpt, exp = fixture_checkpoint
    path = write_torch_file(tmp_path / "checkpoint_3.pth", ckpt, legacy=legacy)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    got = convert.load_torch_checkpoint(str(path))
    _assert_same_checkpoint(got, ckpt)
    # The converted state is the one of the same checkpoint handed over in memory.
    ours = convert.state_from_torch(got, exp.model, exp.optimizer)
    reference = convert.state_from_torch(
        {**ckpt, "ema": ckpt["ema"]["shadow_params"]}, exp.model, exp.optimizer
    )
    assert int(ours.step) == 1234
    jax.tree.map(np.testing.assert_array_equal, ours, reference)


def test_reader_agrees_with_torch_load(tmp_path, fixture_checkpoint):
    torch = pytest.importorskip("torch")
    ckpt, _ = fixture_checkpoint
    as_torch = lambda x: torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    saved = {
        "model": OrderedDict((k, as_torch(v)) for k, v in ckpt["model"].items()),
        "ema": dict(ckpt["ema"], shadow_params=list(map(as_torch, ckpt["ema"]["shadow_params"]))),
        "step": ckpt["step"],
    }
    torch.save(saved, tmp_path / "saved.pth")
    ours = read_torch_file(tmp_path / "saved.pth")
    theirs = torch.load(tmp_path / "saved.pth", map_location="cpu", weights_only=True)
    assert list(ours["model"]) == list(theirs["model"]) and ours["step"] == theirs["step"]
    for a, b in zip(ours["ema"]["shadow_params"], theirs["ema"]["shadow_params"], strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    for key, value in theirs["model"].items():
        assert ours["model"][key].dtype == value.numpy().dtype
        np.testing.assert_array_equal(ours["model"][key], value.numpy())
