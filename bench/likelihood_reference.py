"""Likelihood against the PyTorch reference on identical weights, data and Hutchinson probes.

The official implementation's likelihood (scipy RK45 on the host calling a PyTorch forward and a
vector-Jacobian product per evaluation) and ours (one jitted diffrax solve with forward-mode
divergence) run on the same machine in one go:

1. ``ref_bench.py --save-weights`` writes the reference network's initial state dict;
2. its output layer, initialized to (almost) zero (``init_scale=0``: with it the ODE is almost
   linear and says little), is redrawn from N(0, 1 / fan_avg) with a fixed seed (``--redraw
   all``: every such layer, also each residual block's second convolution);
3. ``ref_bench.py --load-weights --what likelihood --save-likelihood-inputs`` times the
   reference's bits/dim on those weights and saves its first repeat's data and probes;
4. the same state dict goes through this package's converter into our network, and
   :func:`scoresde_jax.core.likelihood.log_likelihood` solves on the saved data with the saved
   probes, jitted with the package's likelihood compiler options, timed over ``--repeats``.

One JSON object: both bits/dim per example and their largest difference, both times and
evaluation counts, and ``speedup`` = reference seconds / ours on the same input (the reference's
first repeat). The reference's own medians over its repeats (different data) are included.

Example (ref_bench's README says how to make the PyTorch environment)::

    python bench/likelihood_reference.py --ref_python $S/venv/bin/python \\
        --ref_repo $S/score_sde_pytorch --batch 4 --repeats 3
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from model import run_ref_bench  # bench/model.py, beside this script

from scoresde_jax import xla_flags
from scoresde_jax.core.likelihood import LIKELIHOOD_ODE, log_likelihood, logp_to_bpd
from scoresde_jax.models import ncsnpp
from scoresde_jax.run.experiment import build_experiment
from scoresde_jax.run.summary import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "configs/vp/cifar10_ddpmpp_continuous.py"
DEFAULT_OVERRIDES = ("model.nf=32", "model.num_res_blocks=1")


def run_reference(args, *extra: str) -> dict:
    """ref_bench.py's JSON line for ``args.config`` with ``extra`` arguments."""
    extra = [*extra, "--batch", str(args.batch), "--seed", str(args.seed)]
    extra += ["--rtol", str(args.rtol), "--atol", str(args.atol)]
    if args.override:
        extra += ["--override", *args.override]
    return run_ref_bench(
        args.ref_python, args.ref_bench, args.ref_repo, args.config, extra, "likelihood_reference"
    )


def redraw_near_zero(
    state_dict: dict[str, np.ndarray], seed: int, which: str = "output", threshold: float = 1e-6
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Weight tensors (2-D linear ``[out, in]`` or 4-D convolution ``[out, in, h, w]``) whose RMS
    is below ``threshold`` redrawn from N(0, 1 / fan_avg): ``"output"`` the last of them in the
    state dict's (module) order, the output layer; ``"all"`` every one (also each residual
    block's second convolution and attention's output). Returns the new dict and their names."""
    near_zero = [
        name
        for name, w in state_dict.items()
        if name.endswith("weight") and w.ndim in (2, 4) and np.sqrt(np.mean(w**2)) < threshold
    ]
    chosen = near_zero[-1:] if which == "output" else near_zero
    rng = np.random.default_rng(seed)
    out = dict(state_dict)
    for name in chosen:
        w = np.asarray(state_dict[name])
        fan_avg = math.prod(w.shape[2:]) * (w.shape[0] + w.shape[1]) / 2
        out[name] = (rng.standard_normal(w.shape) / math.sqrt(fan_avg)).astype(w.dtype)
    return out, chosen


def ours(args, state_dict: dict[str, np.ndarray], inputs: dict[str, np.ndarray]) -> dict:
    """Our bits/dim of the reference's saved data and probes on the same weights."""
    config = load_config(os.path.join(ROOT, args.config), args.override)
    exp = build_experiment(config)
    if not isinstance(exp.model, ncsnpp.NCSNpp):
        raise SystemExit(f"{args.config}: the comparison converts NCSN++/DDPM++ networks only")
    variables = ncsnpp.params_from_torch_state_dict(state_dict, exp.model)
    nchw_to_nhwc = lambda a: np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))
    x = jnp.asarray(nchw_to_nhwc(inputs["data"]))
    probes = jnp.asarray(nchw_to_nhwc(inputs["hutchinson"]))[None]
    compiler_options = xla_flags.solve_compiler_options()

    @functools.partial(jax.jit, compiler_options=compiler_options)
    def bpd_fn(variables, x, probes):
        res = log_likelihood(
            exp.sde,
            exp.score_fn(variables),
            x,
            jax.random.key(0),  # unused: the probes are given
            probes=probes,
            rtol=args.rtol,
            atol=args.atol,
            solver=args.solver,
        )
        width = 2.0 if config.data.centered else 1.0
        return logp_to_bpd(res.logp, math.prod(x.shape[1:]), data_width=width), res.nfe

    start = time.perf_counter()
    compiled = bpd_fn.lower(variables, x, probes).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        bpd, nfe = jax.block_until_ready(compiled(variables, x, probes))
        times.append(time.perf_counter() - start)
    return {
        "solver": args.solver,
        "compiler_options": compiler_options,
        "compile_s": compile_s,
        "median_s": statistics.median(times),
        "times_s": times,
        "nfe": int(nfe),
        "bpd": np.asarray(bpd, np.float64).tolist(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref_python", required=True, help="a Python with torch")
    parser.add_argument("--ref_repo", required=True, help="a score_sde_pytorch checkout")
    parser.add_argument("--ref_bench", help="ref_bench.py (default: the shared folder's)")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--override", nargs="*", default=list(DEFAULT_OVERRIDES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed solves on each side")
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--solver", default=LIKELIHOOD_ODE.solver, help="our ODE solver")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--redraw",
        default="output",
        choices=["output", "all"],
        help="near-zero layers given random weights: the output layer or all of them",
    )
    parser.add_argument("--workdir", help="keep the weights and inputs here (default: a temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or tmp
        os.makedirs(work, exist_ok=True)
        initial, weights = os.path.join(work, "initial.npz"), os.path.join(work, "weights.npz")
        inputs_path = os.path.join(work, "inputs.npz")
        run_reference(
            args, "--what", "train", "--repeats", "1", "--warmup", "0", "--save-weights", initial
        )
        with np.load(initial) as z:
            state_dict, redrawn = redraw_near_zero(dict(z), args.seed, args.redraw)
        np.savez(weights, **state_dict)
        ref = run_reference(
            args,
            *("--what", "likelihood", "--load-weights", weights),
            *("--save-likelihood-inputs", inputs_path),
            *("--repeats", str(args.repeats), "--warmup", "1"),
        )
        with np.load(inputs_path) as z:
            inputs = dict(z)
        mine = ours(args, state_dict, inputs)

    lik = ref["likelihood"]
    if "error" in lik:
        raise SystemExit(f"the reference's likelihood failed: {lik['error']}")
    ref_bpd = np.asarray(inputs["bpd"], np.float64)
    ref_first_s = lik["times_s"][0]
    row = {
        "bench": "likelihood_reference",
        "config": args.config,
        "overrides": args.override,
        "batch": args.batch,
        "rtol": args.rtol,
        "atol": args.atol,
        "redraw": args.redraw,
        "weights_redrawn": redrawn,
        "ours": mine,
        "reference": {
            "method": lik["method"],
            "first_s": ref_first_s,
            "first_nfev": int(inputs["nfev"]),
            "bpd": ref_bpd.tolist(),
            "median_s": lik["median_s"],
            "nfev": lik["nfev"],
            "params": lik.get("params"),
            "torch": ref["host"]["torch"],
            "threads": ref["threads"],
            "command": ref["command"],
        },
        "bpd_max_abs_diff": float(np.max(np.abs(np.asarray(mine["bpd"]) - ref_bpd))),
        "speedup": ref_first_s / mine["median_s"],
        "jax": jax.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0],
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
