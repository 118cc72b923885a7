"""Test helpers for training runs: dotted config overrides, comparable parameter leaves and the
XLA flags of the command-line runs that tests start."""

import os

import jax
import numpy as np


def override(config, fields: dict):
    """Sets ``{"section.field": value}`` entries of an ml-collections config; returns it."""
    for key, value in fields.items():
        *sections, field = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[field] = value
    return config


def leaves(tree):
    """The leaves of a (possibly sharded) pytree as host numpy arrays, in tree order."""
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def xla_flags(num_devices: int | None = None) -> str:
    """``XLA_FLAGS`` for a command-line run a test starts: this run's flags (conftest.py's
    and the package's defaults) with ``num_devices`` host devices (``None``: XLA's one)."""
    device_count = "--xla_force_host_platform_device_count"
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(device_count)]
    if num_devices is not None:
        flags.append(f"{device_count}={num_devices}")
    return " ".join(flags)
