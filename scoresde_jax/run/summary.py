"""Parameter counts of the networks of experiment configs, without allocating any weights.

    python -m scoresde_jax.run.summary                      # the full-size CIFAR-10 configs
    python -m scoresde_jax.run.summary configs/vp/cifar10_ddpm.py --json

Run from the repository root (config files import ``configs.*``).
"""

from __future__ import annotations

import ast
import json
import math
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from absl import flags

from scoresde_jax.run import preflight
from scoresde_jax.run.experiment import data_shape, model_from_config

CIFAR10_CONFIGS = (
    "configs/ve/cifar10_ncsnpp_continuous.py",
    "configs/ve/cifar10_ncsnpp_deep_continuous.py",
    "configs/vp/cifar10_ddpmpp_continuous.py",
    "configs/vp/cifar10_ddpmpp_deep_continuous.py",
    "configs/vp/cifar10_ddpm.py",
)


def load_config(path: str, overrides: Sequence[str] = ()):
    """Imports a config file and returns its ``get_config()`` with ``overrides`` applied, each
    ``a.b=value`` with ``value`` a Python literal (else the bare string)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path} does not exist")
    sys.path.insert(0, os.getcwd())
    config = preflight.load_config(path)
    for assignment in overrides:
        key, value = assignment.split("=", 1)
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        *sections, field = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[field] = value
    return config


def count_parameters(config) -> int:
    """Number of parameters of ``config``'s network (all leaves of its parameter tree)."""
    model = model_from_config(config)
    x = jnp.zeros((1, *data_shape(config)), jnp.float32)
    shapes = jax.eval_shape(
        lambda k: model.init(k, x, jnp.ones((1,), jnp.float32)), jax.random.key(0)
    )
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def main(argv=None) -> list[dict]:
    """The command line (``argv`` without the program name); returns the rows it printed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return []
    fv = flags.FlagValues()
    flags.DEFINE_bool("json", False, "One JSON object per line.", flag_values=fv)
    paths = fv(["summary", *argv])[1:] or list(CIFAR10_CONFIGS)
    rows = []
    for path in paths:
        config = load_config(path)
        row = {"config": path, "model": config.model.name, "parameters": count_parameters(config)}
        rows.append(row)
        if fv.json:
            print(json.dumps(row))
        else:
            print(f"{row['parameters']:>14,}  {row['model']:<10} {path}")
    return rows


if __name__ == "__main__":
    main()
