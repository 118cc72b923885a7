"""Loading the parity fixtures in ``tests/fixtures`` and comparing outputs with them."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def load_fixture(name: str):
    """``(config, meta, state_dict, io)`` of the fixture folder ``name``."""
    folder = FIXTURES / name
    config = ml_collections.ConfigDict(json.loads((folder / "config.json").read_text()))
    meta = json.loads((folder / "meta.json").read_text())
    state_dict = dict(np.load(folder / "state_dict.npz"))
    io = dict(np.load(folder / "io.npz"))
    return config, meta, state_dict, io


def nhwc(x: np.ndarray) -> jax.Array:
    return jnp.asarray(x.transpose(0, 2, 3, 1))


def per_sample_error(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Max abs error of each sample relative to that sample's largest output."""
    b = ref.shape[0]
    scale = np.abs(ref).reshape(b, -1).max(axis=1)
    return np.abs(out - ref).reshape(b, -1).max(axis=1) / scale


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
