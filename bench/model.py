"""Network speed and memory: one forward pass and one full training step of a config's network.

    python bench/model.py                                    # NCSN++ and DDPM++ cont., batch 8
    python bench/model.py --config configs/vp/cifar10_ddpm.py --batch 8 --repeats 5
    python bench/model.py --ref_python $S/venv/bin/python --ref_repo $S/score_sde_pytorch

With ``--ref_python`` and ``--ref_repo`` each config is also timed with the official PyTorch
implementation (``reference_bench/ref_bench.py`` of the shared folder, or ``--ref_bench``; its
training step and one ``score_fn`` forward, same batch, repeats, warm-ups and overrides, as many
threads as this machine has cores) right after ours, and the row gains ``reference`` and the
ratios ``forward_ratio`` / ``train_step_ratio`` (ours / PyTorch: below 1 is faster).

Prints one JSON object per config: median wall times (after a warm-up that compiles), the
parameter count, XLA's memory estimate of each compiled program and the process's peak RSS (on
a GPU also the device's peak bytes in use). The training step is the library's own: the
continuous DSM loss of the config, its gradient, Adam with clipping and the EMA update, under
one ``jax.jit`` with the state donated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.getcwd())

from scoresde_jax.core.score import time_labels  # noqa: E402
from scoresde_jax.run import experiment  # noqa: E402
from scoresde_jax.run.experiment import data_shape  # noqa: E402
from scoresde_jax.run.state import init_state  # noqa: E402
from scoresde_jax.run.summary import load_config  # noqa: E402
from scoresde_jax.run.train_step import make_train_step  # noqa: E402

DEFAULT_CONFIGS = (
    "configs/ve/cifar10_ncsnpp_continuous.py",
    "configs/vp/cifar10_ddpmpp_continuous.py",
)


def _time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _memory(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
        return {
            "argument_bytes": int(m.argument_size_in_bytes),
            "output_bytes": int(m.output_size_in_bytes),
            "temp_bytes": int(m.temp_size_in_bytes),
        }
    except Exception as e:  # backends differ in what they report
        return {"unavailable": repr(e)}


def bench_config(
    path: str, batch: int, repeats: int, warmup: int, overrides: list[str] = ()
) -> dict:
    config = load_config(path, overrides)
    sde = experiment.sde_from_config(config)
    model = experiment.model_from_config(config)
    optimizer = experiment.optimizer_from_config(config.optim)
    loss_fn = experiment.loss_from_config(config, sde)
    shape = (batch, *data_shape(config))
    key = jax.random.key(0)
    x = jax.random.normal(key, shape)
    t = jnp.linspace(0.1, 0.9, batch)
    labels = time_labels(sde, t, continuous=config.training.continuous)

    params = jax.jit(lambda k: model.init(k, x[:1], labels[:1]))(key)
    n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))

    forward = jax.jit(lambda p, x, y: model.apply(p, x, y, train=False))
    fwd_compiled = forward.lower(params, x, labels).compile()
    t0 = time.perf_counter()
    jax.block_until_ready(forward(params, x, labels))
    fwd_first = time.perf_counter() - t0
    for _ in range(warmup):
        jax.block_until_ready(forward(params, x, labels))
    fwd_median, fwd_all = _time(lambda: forward(params, x, labels), repeats)

    step = jax.jit(
        make_train_step(
            model=model,
            loss_fn=loss_fn,
            optimizer=optimizer,
            ema_rate=config.model.ema_rate,
            seed_key=key,
        ),
        donate_argnums=0,
    )
    state = init_state(params, optimizer)
    batches = x[None]
    step_compiled = step.lower(state, batches).compile()
    t0 = time.perf_counter()
    state, _ = step(state, batches)
    jax.block_until_ready(state)
    step_first = time.perf_counter() - t0
    for _ in range(warmup):
        state, _ = step(state, batches)
    jax.block_until_ready(state)

    step_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = step(state, batches)
        jax.block_until_ready(state)
        step_times.append(time.perf_counter() - start)
    row = {
        "bench": "model",
        "config": path,
        "model": config.model.name,
        "parameters": n_params,
        "batch": batch,
        "repeats": repeats,
        "forward_s": fwd_median,
        "forward_all_s": fwd_all,
        "forward_first_call_s": fwd_first,
        "train_step_s": statistics.median(step_times),
        "train_step_all_s": step_times,
        "train_step_first_call_s": step_first,
        "loss_finite": bool(np.isfinite(float(metrics["loss"]))),
        "forward_memory": _memory(fwd_compiled),
        "train_step_memory": _memory(step_compiled),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    device = jax.devices()[0]
    stats = getattr(device, "memory_stats", lambda: None)()
    if stats and "peak_bytes_in_use" in stats:
        row["device_peak_mib"] = stats["peak_bytes_in_use"] / 2**20
    return row


def _ref_bench_path(given: str | None) -> str:
    if given:
        return given
    shared = os.environ.get("SCORESDE_SHARED") or os.path.join(os.getcwd(), "..", "shared")
    return os.path.join(shared, "reference_bench", "ref_bench.py")


def run_ref_bench(
    python: str, ref_bench: str | None, repo: str, config: str, extra: list[str], tag: str
) -> dict:
    """ref_bench.py's JSON line for ``config`` (``extra``: its other arguments) with as many
    threads as this machine has cores, plus the ``command`` that made it."""
    cmd = [python, _ref_bench_path(ref_bench), "--repo", repo, "--config", config]
    cmd += ["--threads", str(os.cpu_count()), *extra]
    print(f"[{tag}] reference: {' '.join(cmd)}", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"ref_bench failed ({out.returncode}):\n{out.stderr[-3000:]}")
    row = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    return dict(row, command=cmd[1:])


def bench_reference(args, path: str) -> dict:
    """The PyTorch reference's training step and forward pass for ``path``: ref_bench's JSON."""
    extra = ["--batch", str(args.batch), "--what", "train,sample_step"]
    extra += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    if args.override:
        extra += ["--override", *args.override]
    return run_ref_bench(args.ref_python, args.ref_bench, args.ref_repo, path, extra, "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="*", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--override", nargs="*", default=[], help="config overrides a.b=value")
    parser.add_argument("--ref_python", help="a Python with torch, to time the reference too")
    parser.add_argument("--ref_repo", help="a score_sde_pytorch checkout (commit cb1f359)")
    parser.add_argument("--ref_bench", help="ref_bench.py (default: the shared folder's)")
    args = parser.parse_args()
    if bool(args.ref_python) != bool(args.ref_repo):
        parser.error("--ref_python and --ref_repo go together")
    for path in args.config:
        row = bench_config(path, args.batch, args.repeats, args.warmup, args.override)
        if args.override:
            row["overrides"] = args.override
        if args.ref_python:
            ref = bench_reference(args, path)
            row["reference"] = {
                "forward_s": ref["sample_step"]["score_fn_forward"]["median_s"],
                "train_step_s": ref["train"]["median_s"],
                "parameters": ref["params"],
                "threads": ref["threads"],
                "torch": ref["host"]["torch"],
                "command": ref["command"],
            }
            row["same_parameter_count"] = ref["params"] == row["parameters"]
            row["forward_ratio"] = row["forward_s"] / row["reference"]["forward_s"]
            row["train_step_ratio"] = row["train_step_s"] / row["reference"]["train_step_s"]
        row.update(
            jax=jax.__version__,
            backend=jax.default_backend(),
            device=str(jax.devices()[0].device_kind),
            num_devices=jax.device_count(),
            cpu_count=os.cpu_count(),
            machine=platform.machine(),
            xla_flags=os.environ.get("XLA_FLAGS", ""),
            load_avg_1m=os.getloadavg()[0],
        )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
