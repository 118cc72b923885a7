"""Which ODE solver makes bits/dim cheapest on a trained model: network evaluations and time.

For a training run's checkpoint (``--workdir``, ``--config`` and overrides as given to
``main.py``), bits/dim of the first ``--examples`` test images with each of ``--solvers`` at the
same tolerances, the same dequantization and the same Hutchinson probes, compiled with the
package's likelihood options. One JSON line per solver (evaluations, seconds, bits/dim and its
largest difference from the first solver's), then a summary naming the solver with the fewest
evaluations among those within ``--agree`` bits/dim of the first.

Example::

    python bench/likelihood_solvers.py --config configs/mnist/ddpmpp_vp.py \\
        --workdir runs/mnist_vp --override data.path=/path/to/mnist --examples 16
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import jax
import numpy as np

from scoresde_jax import xla_flags
from scoresde_jax.core.likelihood import bits_per_dim
from scoresde_jax.run.experiment import image_source_from_config, restore_checkpoint
from scoresde_jax.run.summary import load_config


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True, help="the training run's work directory")
    parser.add_argument("--override", nargs="*", default=[], help="config overrides a.b=value")
    parser.add_argument("--step", type=int, default=None, help="checkpoint (default: newest)")
    parser.add_argument("--solvers", nargs="+", default=["tsit5", "dopri5", "bosh3", "dopri8"])
    parser.add_argument("--examples", type=int, default=16, help="test images, one batch")
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agree", type=float, default=1e-3, help="bits/dim tolerance")
    args = parser.parse_args(argv)

    config = load_config(args.config, args.override)
    exp, restored = restore_checkpoint(config, args.workdir, args.step)
    images, _ = image_source_from_config(config.data, "test").get(np.arange(args.examples))
    x01 = images.astype(np.float32) / 255.0
    key = jax.random.key(args.seed)
    options = xla_flags.solve_compiler_options()
    rows = []
    for solver in args.solvers:

        @functools.partial(jax.jit, compiler_options=options)
        def bpd_fn(params, x01, key, solver=solver):
            res = bits_per_dim(
                exp.sde,
                exp.score_fn(params),
                x01,
                key,
                centered=config.data.centered,
                solver=solver,
                rtol=args.rtol,
                atol=args.atol,
            )
            return res.bpd, res.nfe

        start = time.perf_counter()
        compiled = bpd_fn.lower(restored.state.ema_params, x01, key).compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        bpd, nfe = jax.block_until_ready(compiled(restored.state.ema_params, x01, key))
        wall = time.perf_counter() - start
        bpd = np.asarray(bpd, np.float64)
        first = rows[0]["bpd"] if rows else bpd.tolist()
        row = {
            "bench": "likelihood_solvers",
            "config": args.config,
            "step": restored.step,
            "examples": args.examples,
            "solver": solver,
            "rtol": args.rtol,
            "atol": args.atol,
            "nfe": int(nfe),
            "wall_s": wall,
            "compile_s": compile_s,
            "s_per_nfe": wall / int(nfe),
            "bpd_mean": float(bpd.mean()),
            "bpd": bpd.tolist(),
            "max_abs_diff_from_first": float(np.max(np.abs(bpd - np.asarray(first)))),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    agreeing = [r for r in rows if r["max_abs_diff_from_first"] <= args.agree]
    best = min(agreeing, key=lambda r: r["nfe"])
    print(
        json.dumps(
            {
                "summary": {
                    "fewest_evaluations": best["solver"],
                    "nfe": {r["solver"]: r["nfe"] for r in rows},
                    "wall_s": {r["solver"]: r["wall_s"] for r in rows},
                    "agree_within": args.agree,
                    "jax": jax.__version__,
                    "machine": platform.machine(),
                    "cpu_count": os.cpu_count(),
                }
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
