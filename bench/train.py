"""Training throughput: steps/s, images/s, compile time and peak memory of the real training step.

    python bench/train.py                                  # NCSN++ and DDPM++ cont., batch 8 (CPU)
    python bench/train.py --batch 128 --steps 20           # the paper's batch (GPU/TPU)
    python bench/train.py --host_devices 2 --n_jitted_steps 4   # CPU: 2 sharded host devices

The step is the one ``--mode train`` runs: the config's loss, gradient, Adam with warm-up and
clipping, EMA, under ``jax.jit`` on the ``("data",)`` mesh with the state donated and the batch
sharded, ``n_jitted_steps`` optimizer steps per call. Data are random arrays already on the
devices, so the figures are those of the step alone (the input pipeline runs in a background
thread during training). Prints one JSON object per config.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        nargs="*",
        default=[
            "configs/ve/cifar10_ncsnpp_continuous.py",
            "configs/vp/cifar10_ddpmpp_continuous.py",
        ],
    )
    parser.add_argument("--batch", type=int, default=8, help="global batch size")
    parser.add_argument("--steps", type=int, default=5, help="timed calls (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after compiling")
    parser.add_argument("--n_jitted_steps", type=int, default=1)
    parser.add_argument("--scan_unroll", type=int, default=1)
    parser.add_argument(
        "--host_devices", type=int, default=None, help="CPU only: split the host into N devices"
    )
    parser.add_argument(
        "--xla_defaults",
        choices=("on", "off"),
        default="on",
        help="off: time XLA's own CPU defaults instead of the package's (SCORESDE_XLA_DEFAULTS)",
    )
    parser.add_argument("--override", nargs="*", default=[], help="config overrides a.b=value")
    return parser.parse_args()


ARGS = _parse()
_flags = os.environ.get("XLA_FLAGS", "")
if ARGS.host_devices:
    _flags += f" --xla_force_host_platform_device_count={ARGS.host_devices}"
os.environ["XLA_FLAGS"] = _flags.strip()
if ARGS.xla_defaults == "off":
    os.environ["SCORESDE_XLA_DEFAULTS"] = "off"

import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.getcwd())

from scoresde_jax.run.experiment import build_experiment  # noqa: E402
from scoresde_jax.run.summary import load_config  # noqa: E402
from scoresde_jax.run.trainer import jitted_train_step  # noqa: E402


def bench_config(path: str) -> dict:
    config = load_config(path, ARGS.override)
    config.training.batch_size = ARGS.batch
    config.training.n_jitted_steps = ARGS.n_jitted_steps
    exp = build_experiment(config)
    state = exp.init_state()
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    config.training.scan_unroll = ARGS.scan_unroll
    p_step = jitted_train_step(exp)
    shape = (ARGS.n_jitted_steps, ARGS.batch, *exp.data_shape)
    batches = jax.device_put(
        np.random.default_rng(0).uniform(size=shape).astype(np.float32), exp.batch_sharding(1)
    )
    t0 = time.perf_counter()
    compiled = p_step.lower(state, batches).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(ARGS.warmup):
        state, metrics = compiled(state, batches)
    jax.block_until_ready(state)
    times = []
    for _ in range(ARGS.steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batches)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    call_s = statistics.median(times)
    step_s = call_s / ARGS.n_jitted_steps
    row = {
        "bench": "train",
        "config": path,
        "model": config.model.name,
        "parameters": n_params,
        "global_batch": ARGS.batch,
        "devices": int(exp.mesh.shape["data"]),
        "n_jitted_steps": ARGS.n_jitted_steps,
        "scan_unroll": ARGS.scan_unroll,
        "compile_s": compile_s,
        "call_s_median": call_s,
        "call_s_all": times,
        "step_s": step_s,
        "steps_per_s": 1.0 / step_s,
        "images_per_s": ARGS.batch / step_s,
        "loss_finite": bool(np.isfinite(float(metrics["loss"]))),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    try:
        m = compiled.memory_analysis()
        row["xla_temp_mib"] = m.temp_size_in_bytes / 2**20
        row["xla_argument_mib"] = m.argument_size_in_bytes / 2**20
    except Exception:  # noqa: BLE001 - not every backend reports it
        pass
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if stats and "peak_bytes_in_use" in stats:
        row["device_peak_mib"] = stats["peak_bytes_in_use"] / 2**20
    return row


def main() -> None:
    for path in ARGS.config:
        row = bench_config(path)
        row.update(
            backend=jax.default_backend(),
            device_kind=jax.devices()[0].device_kind,
            machine=platform.processor() or platform.machine(),
            cpu_count=os.cpu_count(),
            jax_version=jax.__version__,
            xla_flags=os.environ.get("XLA_FLAGS", ""),
        )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
