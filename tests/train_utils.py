"""Test helpers for training runs: dotted config overrides and comparable parameter leaves."""

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
