"""The sampler of ``--mode sample``, shared by its unconditional and class-conditional tasks."""

from __future__ import annotations

import jax

from scoresde_jax.core.mesh import device_count, sharded_sampler
from scoresde_jax.run.experiment import sampler_from_config


def sample_batch(config, exp, step: int, make_score_fn=None):
    """``(run, n, key)``: ``run(params, key) -> (x, nfe)`` draws ``n`` samples over the mesh
    (``sampling.batch_size`` rounded up to a multiple of the device count) with the score of
    ``make_score_fn(params)`` (default ``exp.score_fn``); ``key``: the sampling key of ``step``."""
    n_dev = device_count(exp.mesh)
    n = -(-config.sampling.get("batch_size", 64) // n_dev) * n_dev
    sample_fn = sampler_from_config(config.sampling, exp.sde)
    run = sharded_sampler(exp.mesh, sample_fn, make_score_fn or exp.score_fn, (n, *exp.data_shape))
    return run, n, jax.random.fold_in(exp.eval_key, 2 * 10**6 + step)
