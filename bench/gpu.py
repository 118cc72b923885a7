"""GPU run: training step, sampling, likelihood and the PyTorch reference, in one go.

    bash bench/gpu.sh                       # on one NVIDIA GPU, about 8 minutes at most
    bash bench/gpu.sh --tiny                # tiny networks on any device (the CPU test)
    python bench/gpu.py --parts train --dtypes bfloat16 --peak_tflops 989

Measures, each in its own worker process (so every part has a clean device-memory peak and a
hard time limit):

* ``train``: the step ``--mode train`` runs (``scoresde_jax.run.trainer.jitted_train_step``: the
  config's loss and gradient, Adam with warm-up and clipping, EMA, state donated) of NCSN++ cont.
  (VE) and DDPM++ cont. (VP) at batch 128, in float32 and in bfloat16 (``config.model.dtype``):
  images/s (median of the timed steps after warm-up), compile time, XLA's memory analysis and
  the device's peak bytes in use, XLA's flop count of the compiled step (per step and per
  image) and the MFU: those flops / step time / the GPU's peak for the dtype (:data:`PEAKS`;
  ``--peak_tflops`` overrides it).
* ``reference``: the training step of yang-song/score_sde_pytorch on the same GPU
  (``bench/gpu_reference.py``, run with ``--ref_python``), where torch sees a CUDA device and
  ``--ref_repo`` / ``$SCORE_SDE_PYTORCH`` names a checkout; a ``skipped`` row says why not.
  ``ratio`` rows divide our images/s by the reference's.
* ``sample``: images/s of DPM-Solver++ (20 steps) and of the config's PC sampler (1000 steps)
  on DDPM++ cont. with random weights, built by ``scoresde_jax.run.draw.sample_batch`` as
  ``--mode sample`` builds them. If 1000 PC steps do not fit the time left, fewer are run and
  the 1000-step figure is extrapolated from them (both reported).
* ``likelihood``: ``scoresde_jax.core.likelihood.bits_per_dim`` of a batch with the library
  defaults (Tsit5, rtol = atol = 1e-5, one Rademacher probe): evaluations, evaluations/s, wall
  time and bits/dim. The network's near-zero output layer (``init_scale=0``) is redrawn at unit
  scale first, so that the ODE is not almost linear.

Every row is one JSON object on stdout (also written to ``--out``: ``$OUT/gpu.jsonl`` when
``$OUT`` is set, else ``bench/results/gpu.jsonl``); progress goes to stderr. ``--budget_s``
(default 450) bounds the whole run: each part gets a hard time limit that leaves the later parts
their minimum, and a part that no longer fits prints a ``skipped`` row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "ncsnpp": "configs/ve/cifar10_ncsnpp_continuous.py",
    "ddpmpp": "configs/vp/cifar10_ddpmpp_continuous.py",
}
SAMPLE_CONFIG = "ddpmpp"
PARTS = ("train", "reference", "sample", "likelihood")
TINY_OVERRIDES = (
    "model.nf=8",
    "model.num_res_blocks=1",
    "model.ch_mult=(1,)",
    "model.attn_resolutions=()",
    "data.image_size=16",
)
# --tiny: the LLVM optimization level of XLA's backends lowered, which cuts a CPU compilation of
# the tiny networks' training step by about half.
TINY_XLA_FLAGS = "--xla_backend_optimization_level=0"
# Published anchor: score_sde_pytorch's README ("JAX vs. PyTorch"): NCSN++ cont. (VE), 4x Tesla
# V100 32GB, the configs' batch of 128: JAX 0.30 s per step (n_jitted_steps=1), PyTorch 0.56 s.
ANCHOR = {
    "source": "yang-song/score_sde_pytorch README, 'JAX vs. PyTorch'",
    "hardware": "4x Tesla V100 32GB",
    "batch": 128,
    "jax_s_per_step": 0.30,
    "pytorch_s_per_step": 0.56,
    "jax_images_per_s_per_gpu": 128 / 0.30 / 4,
    "pytorch_images_per_s_per_gpu": 128 / 0.56 / 4,
}
GOALS = {"bfloat16_mfu": 0.35, "images_per_s_over_reference": 1.5}

# Peak dense TFLOP/s (no structured sparsity) from NVIDIA's data sheets; "float32" is the
# non-tensor-core FP32 rate, "tf32" the TF32 tensor-core rate (XLA's default precision for
# float32 convolutions and matmuls on Ampere and later), "bfloat16" the BF16 tensor-core rate
# with FP32 accumulation. The sheets quote TF32/BF16 with sparsity; dense is half of that.
#   H100 / H200 SXM:  nvidia.com/en-us/data-center/h100/ and .../h200/  (FP32 67, TF32 989*,
#                     BF16 1,979*); H100 PCIe: FP32 51, TF32 756*, BF16 1,513*; H100 NVL and
#                     H200 NVL: FP32 60, TF32 835*, BF16 1,671*; GH200: as H100 SXM.
#   A100 (SXM4 and PCIe, 40/80 GB): NVIDIA A100 data sheet: FP32 19.5, TF32 156, BF16 312.
#   L4:   nvidia.com/en-us/data-center/l4/: FP32 30.3, TF32 120*, BF16 242*.
#   A10:  nvidia.com/en-us/data-center/products/a10-gpu/: FP32 31.2, TF32 62.5, BF16 125.
#   A10G: no NVIDIA sheet (an AWS part, G5 instances); as published by AWS and compared with the
#         A10 in baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/: FP32 35, TF32 35,
#         BF16 70 (the least certain row).
#   V100: NVIDIA V100 data sheet: FP32 15.7 (SXM2), 14 (PCIe), 16.4 (V100S); FP16 tensor 125 /
#         112 / 130; no TF32 or BF16 tensor cores (null: bfloat16 runs get no MFU there).
#   T4:   NVIDIA T4 data sheet: FP32 8.1, FP16 tensor 65; no TF32 or BF16.
# (*: with sparsity, halved here.) Matched in order against jax's device_kind.
PEAKS = (
    (r"GH200", "GH200", {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4}),
    (r"H200.*NVL", "H200 NVL", {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5}),
    (r"H200", "H200 SXM", {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4}),
    (r"H100.*NVL", "H100 NVL", {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5}),
    (r"H100.*PCIE", "H100 PCIe", {"float32": 51.0, "tf32": 378.0, "bfloat16": 756.5}),
    (r"H100", "H100 SXM", {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4}),
    (r"A100", "A100", {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0}),
    (r"\bL4\b", "L4", {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0}),
    (r"A10G", "A10G", {"float32": 35.0, "tf32": 35.0, "bfloat16": 70.0}),
    (r"\bA10\b", "A10", {"float32": 31.2, "tf32": 62.5, "bfloat16": 125.0}),
    (r"V100S", "V100S PCIe", {"float32": 16.4, "tf32": None, "bfloat16": None}),
    (r"V100.*PCIE", "V100 PCIe", {"float32": 14.0, "tf32": None, "bfloat16": None}),
    (r"V100", "V100 SXM2", {"float32": 15.7, "tf32": None, "bfloat16": None}),
    (r"\bT4\b", "T4", {"float32": 8.1, "tf32": None, "bfloat16": None}),
)


def log(*parts) -> None:
    print("[gpu]", *parts, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ peaks and MFU
def peak_entry(device_kind: str):
    """``(name, {"float32", "tf32", "bfloat16": TFLOP/s or None})`` or ``(None, None)``."""
    for pattern, name, peaks in PEAKS:
        if re.search(pattern, device_kind or "", flags=re.IGNORECASE):
            return name, peaks
    return None, None


def mfu_fields(
    device_kind: str, dtype: str, flops: float | None, step_s: float, override: float | None
) -> dict:
    """``mfu = flops / step_s / peak`` with the peak of ``dtype`` on ``device_kind`` (or
    ``override`` TFLOP/s); ``mfu`` is None, with ``mfu_reason``, where no peak is known."""
    name, peaks = peak_entry(device_kind)
    out = {"peak_table_entry": name}
    if override is not None:
        peak, source = float(override), "--peak_tflops"
    elif peaks is None:
        peak, source = None, f"device kind {device_kind!r} is not in the peak table"
    elif peaks.get(dtype) is None:
        peak, source = None, f"{name} has no {dtype} tensor-core peak in the table"
    else:
        peak, source = peaks[dtype], f"{name} {dtype} data-sheet peak (dense)"
    out["peak_tflops"] = peak
    out["peak_source"] = source
    if not flops or flops <= 0:
        out.update(mfu=None, mfu_reason="XLA's cost analysis gave no flop count")
    elif peak is None:
        out.update(mfu=None, mfu_reason=source + "; pass --peak_tflops")
    else:
        out["mfu"] = flops / step_s / (peak * 1e12)
    out["achieved_tflops"] = flops / step_s / 1e12 if flops else None
    if override is None and dtype == "float32" and peaks and peaks.get("tf32") and flops:
        out["mfu_vs_tf32_peak"] = flops / step_s / (peaks["tf32"] * 1e12)
    return out


def flops_of(analysis) -> float | None:
    """The ``"flops"`` of a ``cost_analysis()`` result: a dict, or a list of dicts (one per
    program) in older jax versions."""
    if analysis is None:
        return None
    items = analysis if isinstance(analysis, (list, tuple)) else [analysis]
    values = [float(a["flops"]) for a in items if a and "flops" in a]
    return sum(values) if values else None


def bytes_of(analysis) -> float | None:
    items = analysis if isinstance(analysis, (list, tuple)) else [analysis]
    values = [float(a["bytes accessed"]) for a in items if a and "bytes accessed" in a]
    return sum(values) if values else None


# ------------------------------------------------------------------------------ arguments
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny networks and sizes (CPU smoke run)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {PARTS}")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help="names or config paths")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=None, help="training batch (128; tiny 2)")
    p.add_argument("--train_steps", type=int, default=None, help="timed steps (20; tiny 2)")
    p.add_argument("--train_warmup", type=int, default=None, help="untimed steps (3; tiny 1)")
    p.add_argument("--sample_batch", type=int, default=None, help="sampling batch (128; tiny 2)")
    p.add_argument("--dpm_steps", type=int, default=None, help="DPM-Solver++ steps (20; tiny 3)")
    p.add_argument("--pc_steps", type=int, default=None, help="PC steps (1000; tiny 4)")
    p.add_argument("--lik_batch", type=int, default=None, help="likelihood batch (32; tiny 2)")
    p.add_argument("--override", nargs="*", default=[], help="config overrides a.b=value")
    p.add_argument("--budget_s", type=float, default=None, help="whole run (450; tiny 600)")
    p.add_argument("--peak_tflops", type=float, default=None, help="peak TFLOP/s for the MFU")
    p.add_argument("--out", default=None, help="JSON lines file (default $OUT/gpu.jsonl)")
    p.add_argument(
        "--compile_cache",
        default=None,
        help="persistent compilation cache dir, or off (default $SCORESDE_COMPILATION_CACHE, "
        "else /tmp/scoresde_gpu_bench_cache)",
    )
    p.add_argument(
        "--ref_repo", default=None, help="score_sde_pytorch checkout ($SCORE_SDE_PYTORCH)"
    )
    p.add_argument(
        "--ref_python",
        default=None,
        help="python with torch ($SCORE_SDE_PYTORCH_PYTHON, else this)",
    )
    p.add_argument("--ref_steps", type=int, default=None, help="reference timed steps (10; tiny 2)")
    p.add_argument("--ref_warmup", type=int, default=None, help="reference warm-up (3; tiny 1)")
    p.add_argument(
        "--ref_ops",
        default="native",
        choices=["native", "build"],
        help="native: the reference's pure-PyTorch upfirdn2d on every device (its CUDA "
        "extensions are not built); build: let it compile its CUDA ops",
    )
    p.add_argument("--ref_allow_cpu", action="store_true", help="time the reference on a CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    tiny = args.tiny
    defaults = {
        "batch": (128, 2),
        "train_steps": (20, 2),
        "train_warmup": (3, 1),
        "sample_batch": (128, 2),
        "dpm_steps": (20, 3),
        "pc_steps": (1000, 4),
        "lik_batch": (32, 2),
        "budget_s": (450.0, 600.0),
        "ref_steps": (10, 2),
        "ref_warmup": (3, 1),
    }
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if tiny else full)
    args.overrides = (list(TINY_OVERRIDES) if tiny else []) + list(args.override)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = set(args.parts) - set(PARTS)
    if bad:
        p.error(f"--parts: unknown {sorted(bad)}; choose from {PARTS}")
    args.configs = [CONFIGS.get(c, c) for c in args.configs]
    return args


# ------------------------------------------------------------------------------ workers
def _setup_jax(spec: dict):
    sys.path.insert(0, ROOT)
    import jax

    from scoresde_jax.run import compile_cache

    cache = spec.get("compile_cache")
    if cache is None:
        cache = os.environ.get(compile_cache.ENV) or "/tmp/scoresde_gpu_bench_cache"
    path = compile_cache.enable(cache)
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if "cache_hits" in event else None
    )
    return jax, (str(path) if path else None), hits


def _config(spec: dict, path: str, dtype: str | None = None):
    from scoresde_jax.run.summary import load_config

    config = load_config(os.path.join(ROOT, path), spec["overrides"])
    if dtype:
        config.model.dtype = dtype
    config.seed = spec["seed"]
    return config


def _device_info(jax) -> dict:
    d = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device_kind": d.device_kind,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
    }


def _device_memory(jax) -> dict:
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if not stats or "peak_bytes_in_use" not in stats:
        return {"device_peak_mib": None, "device_memory_reason": "memory_stats() unavailable"}
    out = {"device_peak_mib": stats["peak_bytes_in_use"] / 2**20}
    if "bytes_limit" in stats:
        out["device_limit_mib"] = stats["bytes_limit"] / 2**20
    return out


def _memory_analysis(compiled) -> dict:
    try:
        m = compiled.memory_analysis()
        fields = ("argument", "output", "alias", "temp", "generated_code")
        return {f"xla_{f}_mib": getattr(m, f"{f}_size_in_bytes") / 2**20 for f in fields}
    except Exception as e:  # noqa: BLE001 - backends differ in what they report
        return {"xla_memory_analysis": f"unavailable: {e!r}"}


def _n_params(jax, tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def worker_train(spec: dict) -> list[dict]:
    jax, cache_dir, hits = _setup_jax(spec)
    import numpy as np

    from scoresde_jax.run.experiment import build_experiment
    from scoresde_jax.run.trainer import jitted_train_step

    path, dtype, batch = spec["config"], spec["dtype"], spec["batch"]
    config = _config(spec, path, dtype)
    config.training.batch_size = batch
    config.training.n_jitted_steps = 1
    exp = build_experiment(config)
    state = exp.init_state()
    n_params = _n_params(jax, state.params)
    p_step = jitted_train_step(exp)
    shape = (1, batch, *exp.data_shape)
    batches = jax.device_put(
        np.random.default_rng(spec["seed"]).uniform(size=shape).astype(np.float32),
        exp.batch_sharding(1),
    )
    log(f"train {path} {dtype} batch {batch}: compiling")
    t0 = time.perf_counter()
    lowered = p_step.lower(state, batches)
    lower_s = time.perf_counter() - t0
    t0, hits_before = time.perf_counter(), len(hits)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    cache_hit = len(hits) > hits_before
    log(f"train {path} {dtype}: lowered in {lower_s:.1f} s, compiled in {compile_s:.1f} s")
    flops = flops_of(compiled.cost_analysis())
    try:
        flops_lowered = flops_of(lowered.cost_analysis())
    except Exception:  # noqa: BLE001 - not every version analyses unoptimized HLO
        flops_lowered = None
    deadline = spec["deadline"]
    first = []
    for _ in range(max(spec["warmup"], 1)):
        start = time.perf_counter()
        state, metrics = compiled(state, batches)
        jax.block_until_ready(state)
        first.append(time.perf_counter() - start)
    times = []
    while len(times) < spec["steps"]:
        step_guess = times[-1] if times else first[-1]
        if len(times) >= 2 and time.time() + step_guess > deadline:
            break
        start = time.perf_counter()
        state, metrics = compiled(state, batches)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    info = _device_info(jax)
    row = {
        "part": "train",
        "config": path,
        "model": config.model.name,
        "dtype": dtype,
        "parameters": n_params,
        "batch": batch,
        "overrides": spec["overrides"],
        "lower_s": lower_s,
        "compile_s": compile_s,
        "compile_cache": cache_dir,
        "compile_cache_hit": cache_hit,
        "warmup_s": first,
        "timed_steps": len(times),
        "steps_requested": spec["steps"],
        "step_s_median": step_s,
        "step_s_all": times,
        "images_per_s": batch / step_s,
        "loss": float(metrics["loss"]),
        "loss_finite": bool(np.isfinite(float(metrics["loss"]))),
        "xla_flops_per_step": flops,
        "xla_flops_per_image": flops / batch if flops else None,
        "xla_flops_per_step_unoptimized": flops_lowered,
        "xla_bytes_accessed_per_step": bytes_of(compiled.cost_analysis()),
        **mfu_fields(info["device_kind"], dtype, flops, step_s, spec["peak_tflops"]),
        **_memory_analysis(compiled),
        **_device_memory(jax),
        **info,
    }
    if row["peak_tflops"] and flops_lowered:
        # The count before XLA's optimizations (the program as written), in case the compiled
        # program's library calls are counted differently on some backend.
        row["mfu_from_unoptimized_flops"] = flops_lowered / step_s / (row["peak_tflops"] * 1e12)
    log(
        f"train {path} {dtype}: {row['images_per_s']:.1f} images/s, step {step_s * 1e3:.1f} ms, "
        f"MFU {row['mfu']}"
    )
    return [row]


def worker_sample(spec: dict) -> list[dict]:
    """DPM-Solver++ first: its time per evaluation sizes the PC run to the time left. Rows are
    printed as they come, so a PC run cut by the time limit keeps the DPM-Solver++ row."""
    jax, cache_dir, hits = _setup_jax(spec)
    from scoresde_jax.run import draw
    from scoresde_jax.run.experiment import build_experiment

    config = _config(spec, spec["config"])
    exp = build_experiment(config)
    params = exp.init_state().ema_params  # --mode sample draws with the EMA parameters
    batch = spec["sample_batch"]
    info = _device_info(jax)
    per_nfe_s, dpm_compile_s = None, None
    for method, steps in (("dpm_solver_pp", spec["dpm_steps"]), ("pc", spec["pc_steps"])):
        cfg = config.copy_and_resolve_references()
        cfg.sampling.method = method
        cfg.sampling.batch_size = batch
        run_steps, note = steps, None
        if method == "pc" and per_nfe_s is not None:
            left = spec["deadline"] - time.time() - 1.2 * (dpm_compile_s or 0.0) - 5.0
            if per_nfe_s * steps > left:
                run_steps = max(int(left / per_nfe_s), 10 if steps >= 10 else steps)
                run_steps = min(run_steps, steps)
                note = (
                    f"{steps} steps would take about {per_nfe_s * steps:.0f} s, more than the "
                    f"{max(left, 0):.0f} s left: ran {run_steps} and extrapolated"
                )
        cfg.sampling.num_steps = run_steps
        run, n, key = draw.sample_batch(cfg, exp, 0)
        log(f"sample {method} {run_steps} steps batch {n}: compiling")
        t0, hits_before = time.perf_counter(), len(hits)
        compiled = run.lower(params, key).compile()
        compile_s = time.perf_counter() - t0
        cache_hit = len(hits) > hits_before
        times = []
        while True:
            start = time.perf_counter()
            x, nfe = jax.block_until_ready(compiled(params, key))
            times.append(time.perf_counter() - start)
            if len(times) >= 3 or method == "pc" or time.time() + times[-1] > spec["deadline"]:
                break
        wall = statistics.median(times)
        nfe = int(nfe)
        row = {
            "part": "sample",
            "config": spec["config"],
            "sampler": method,
            "sampling_options": {
                k: cfg.sampling.get(k)
                for k in ("predictor", "corrector", "dpm_order", "noise_removal", "eps")
            },
            "num_steps_requested": steps,
            "num_steps_run": run_steps,
            "batch": n,
            "nfe": nfe,
            "compile_s": compile_s,
            "compile_cache": cache_dir,
            "compile_cache_hit": cache_hit,
            "wall_s": wall,
            "wall_s_all": times,
            "images_per_s": n / wall,
            "s_per_nfe": wall / max(nfe, 1),
            "samples_finite": bool(jax.numpy.all(jax.numpy.isfinite(x))),
            **info,
        }
        if run_steps != steps:
            row["note"] = note
            row["images_per_s_at_requested_steps_estimate"] = n / (wall * steps / run_steps)
        if method == "dpm_solver_pp":
            per_nfe_s, dpm_compile_s = wall / max(nfe, 1), compile_s
        log(f"sample {method}: {row['images_per_s']:.2f} images/s, {nfe} NFE, {wall:.2f} s")
        print(json.dumps(row), flush=True)
    return []


def unit_scale_near_zero_kernels(jax, params, key, threshold: float = 1e-6):
    """``(params, count)``: kernels whose RMS is below ``threshold`` (``init_scale=0`` layers)
    redrawn from N(0, 1 / fan_avg), the unit-scale variance-scaling initializer."""
    import jax.numpy as jnp

    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, len(leaves))
    out, count = [], 0
    for (path, leaf), k in zip(leaves, keys, strict=True):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel" and leaf.ndim >= 2 and float(jnp.sqrt(jnp.mean(leaf**2))) < threshold:
            receptive = math.prod(leaf.shape[:-2])
            fan_avg = receptive * (leaf.shape[-2] + leaf.shape[-1]) / 2
            leaf = jax.random.normal(k, leaf.shape, leaf.dtype) / math.sqrt(fan_avg)
            count += 1
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out), count


def worker_likelihood(spec: dict) -> list[dict]:
    jax, cache_dir, hits = _setup_jax(spec)
    import numpy as np

    from scoresde_jax import xla_flags
    from scoresde_jax.core.likelihood import LIKELIHOOD_ODE, bits_per_dim
    from scoresde_jax.run.experiment import build_experiment

    config = _config(spec, spec["config"])
    exp = build_experiment(config)
    state = exp.init_state()
    params, redrawn = unit_scale_near_zero_kernels(
        jax, state.ema_params, jax.random.key(spec["seed"] + 1)
    )
    batch = spec["lik_batch"]
    rng = np.random.default_rng(spec["seed"])
    x01 = rng.integers(0, 256, (batch, *exp.data_shape)).astype(np.float32) / 255.0
    key = jax.random.key(spec["seed"] + 2)
    centered = config.data.centered
    fn = jax.jit(
        lambda p, x, k: bits_per_dim(exp.sde, exp.score_fn(p), x, k, centered=centered),
        compiler_options=xla_flags.solve_compiler_options(),
    )
    log(f"likelihood batch {batch}: compiling")
    t0, hits_before = time.perf_counter(), len(hits)
    compiled = fn.lower(params, x01, key).compile()
    compile_s = time.perf_counter() - t0
    cache_hit = len(hits) > hits_before
    start = time.perf_counter()
    res = jax.block_until_ready(compiled(params, x01, key))
    wall = time.perf_counter() - start
    nfe = int(res.nfe)
    bpd = np.asarray(res.bpd, np.float64)
    o = LIKELIHOOD_ODE
    row = {
        "part": "likelihood",
        "config": spec["config"],
        "batch": batch,
        "solver": {"name": o.solver, "rtol": o.rtol, "atol": o.atol, "eps": o.eps},
        "trace": "Hutchinson, 1 Rademacher probe",
        "output_kernels_redrawn": redrawn,
        "compile_s": compile_s,
        "compile_cache": cache_dir,
        "compile_cache_hit": cache_hit,
        "wall_s": wall,
        "nfe": nfe,
        "evaluations_per_s": nfe / wall,
        "s_per_evaluation": wall / max(nfe, 1),
        "bpd_mean": float(np.mean(bpd)),
        "bpd_all": bpd.tolist(),
        "bpd_finite": bool(np.all(np.isfinite(bpd))),
        **_device_info(jax),
    }
    log(f"likelihood: {nfe} evaluations in {wall:.2f} s, bits/dim {row['bpd_mean']:.4f}")
    return [row]


WORKERS = {"train": worker_train, "sample": worker_sample, "likelihood": worker_likelihood}


def run_worker(kind: str, spec: dict) -> None:
    try:
        rows = WORKERS[kind](spec)
    except Exception as e:  # noqa: BLE001 - one JSON row saying what failed, then a failure exit
        import traceback

        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"part": kind, "error": f"{type(e).__name__}: {e}"}), flush=True)
        raise SystemExit(1) from None
    for row in rows:
        print(json.dumps(row), flush=True)


# ------------------------------------------------------------------------------ orchestration
class Runner:
    """Starts the workers one at a time under the run's time budget and collects their rows."""

    # Seconds a part needs at least (skipped below), and keeps free for each later part.
    MIN_S = {"train": 30.0, "reference": 20.0, "sample": 30.0, "likelihood": 25.0}

    def __init__(self, args):
        self.args = args
        self.start = time.time()
        self.deadline = self.start + args.budget_s
        self.rows: list[dict] = []
        self.proc = None
        self.out = args.out or os.path.join(
            os.environ.get("OUT") or os.path.join(ROOT, "bench", "results"),
            "gpu_tiny.jsonl" if args.tiny else "gpu.jsonl",
        )
        os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
        self.file = open(self.out, "w")  # noqa: SIM115 - open for the whole run

    def emit(self, row: dict) -> dict:
        row = {"bench": "gpu", **row}
        line = json.dumps(row)
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()
        self.rows.append(row)
        return row

    def left(self) -> float:
        return self.deadline - time.time()

    def timeout_for(self, part: str, later: list[str]) -> float | None:
        """Hard limit of ``part``: what is left less the minimum of every later part (at least
        the part's own minimum); None when not even that is left."""
        need = self.MIN_S[part] * (0.1 if self.args.tiny else 1.0)
        left = self.left()
        if left < need:
            return None
        keep = sum(self.MIN_S[p] for p in later) * (0.1 if self.args.tiny else 1.0)
        return max(need, left - keep)

    def worker_env(self) -> dict:
        """The workers' environment: ``--tiny`` adds ``TINY_XLA_FLAGS`` (fast compilation, slower
        code: a smoke run's figures mean nothing anyway) unless ``XLA_FLAGS`` sets them."""
        env = dict(os.environ)
        if self.args.tiny and "xla_backend_optimization_level" not in env.get("XLA_FLAGS", ""):
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {TINY_XLA_FLAGS}".strip()
        return env

    def launch(
        self, cmd: list[str], label: dict, timeout: float, env: dict | None = None
    ) -> tuple[int | None, list]:
        """Runs ``cmd`` for at most ``timeout`` s; its stdout JSON lines are emitted as they
        come (with ``label`` fields added), its stderr passes through."""
        got = []
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True, env=env
        )

        def read():
            for line in self.proc.stdout:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        got.append(self.emit({**json.loads(line), **label}))
                    except json.JSONDecodeError:
                        log(f"unreadable worker line: {line[:200]}")
                elif line:
                    log(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        reader.join(timeout=10)
        self.proc = None
        return rc, got

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the worker's own process group
            except ProcessLookupError:
                pass
            proc.wait()

    def worker(self, kind: str, spec_extra: dict, later: list[str], label: dict) -> None:
        timeout = self.timeout_for(kind, later)
        if timeout is None:
            self.emit({"part": kind, **label, "skipped": f"time budget: {self.left():.0f} s left"})
            return
        margin = 2.0 if self.args.tiny else 10.0
        spec = {
            "overrides": self.args.overrides,
            "seed": self.args.seed,
            "peak_tflops": self.args.peak_tflops,
            "compile_cache": self.args.compile_cache,
            "deadline": time.time() + max(timeout - margin, timeout / 2),
            **spec_extra,
        }
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind]
        cmd += ["--spec", json.dumps(spec)]
        t0 = time.time()
        rc, got = self.launch(cmd, label, timeout, env=self.worker_env())
        if rc is None:
            self.emit({"part": kind, **label, "error": f"timed out after {time.time() - t0:.0f} s"})
        elif rc != 0 and not any("error" in r for r in got):
            self.emit({"part": kind, **label, "error": f"worker exited with status {rc}"})

    def reference(self, later: list[str]) -> None:
        args = self.args
        repo = args.ref_repo or os.environ.get("SCORE_SDE_PYTORCH")
        label = {"implementation": "score_sde_pytorch"}
        if not repo:
            self.emit(
                {
                    "part": "reference",
                    **label,
                    "skipped": "no score_sde_pytorch checkout: set SCORE_SDE_PYTORCH=/path or "
                    "pass --ref_repo",
                }
            )
            return
        timeout = self.timeout_for("reference", later)
        if timeout is None:
            self.emit(
                {"part": "reference", **label, "skipped": f"time budget: {self.left():.0f} s"}
            )
            return
        python = args.ref_python or os.environ.get("SCORE_SDE_PYTORCH_PYTHON") or sys.executable
        cmd = [python, os.path.join(ROOT, "bench", "gpu_reference.py"), "--repo", repo]
        cmd += ["--configs", *args.configs, "--batch", str(args.batch)]
        cmd += ["--steps", str(args.ref_steps), "--warmup", str(args.ref_warmup)]
        cmd += ["--ops", args.ref_ops, "--seed", str(args.seed)]
        cmd += ["--deadline", str(time.time() + max(timeout - 5.0, timeout / 2))]
        if args.overrides:
            cmd += ["--override", *args.overrides]
        if args.ref_allow_cpu:
            cmd.append("--allow_cpu")
        t0 = time.time()
        rc, got = self.launch(cmd, label, timeout)
        if rc is None:
            self.emit(
                {"part": "reference", **label, "error": f"timed out after {time.time() - t0:.0f} s"}
            )
        elif rc != 0 and not got:
            self.emit({"part": "reference", **label, "error": f"{python} exited with status {rc}"})

    def env_row(self) -> None:
        args = self.args
        row = {
            "part": "env",
            "argv": sys.argv[1:],
            "tiny": args.tiny,
            "parts": args.parts,
            "configs": args.configs,
            "dtypes": args.dtypes,
            "overrides": args.overrides,
            "budget_s": args.budget_s,
            "out": self.out,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "worker_xla_flags": self.worker_env().get("XLA_FLAGS", ""),
            "anchor": ANCHOR,
            "goals": GOALS,
        }
        try:
            row["git_commit"] = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            row["git_commit"] = None
        try:
            query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
            smi = subprocess.run(
                ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            row["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.SubprocessError) as e:
            row["nvidia_smi"] = f"unavailable: {e}"
        self.emit(row)

    def summary(self) -> None:
        train = [r for r in self.rows if r.get("part") == "train" and "images_per_s" in r]
        refs = [
            r
            for r in self.rows
            if r.get("part") == "reference" and "images_per_s" in r and r.get("config")
        ]
        for ref in refs:
            for ours in (r for r in train if r["config"] == ref["config"]):
                ratio = ours["images_per_s"] / ref["images_per_s"]
                flops = ours.get("xla_flops_per_image")
                row = {
                    "part": "ratio",
                    "config": ours["config"],
                    "ours_dtype": ours["dtype"],
                    "reference_dtype": "float32 (its only mode)",
                    "ours_images_per_s": ours["images_per_s"],
                    "reference_images_per_s": ref["images_per_s"],
                    "ours_over_reference": ratio,
                    "same_parameter_count": ours.get("parameters") == ref.get("parameters"),
                    "goal": GOALS["images_per_s_over_reference"],
                    "goal_met": ratio >= GOALS["images_per_s_over_reference"],
                }
                if flops and ours["dtype"] == "float32" and ours.get("peak_tflops"):
                    # The same network, so our XLA flop count applies to the reference too.
                    row["reference_mfu_with_our_flops"] = (
                        ref["images_per_s"] * flops / (ours["peak_tflops"] * 1e12)
                    )
                self.emit(row)
        bf16 = {r["config"]: r.get("mfu") for r in train if r["dtype"] == "bfloat16"}
        ratios = [r for r in self.rows if r.get("part") == "ratio"]
        self.emit(
            {
                "part": "summary",
                "total_s": time.time() - self.start,
                "bfloat16_mfu": bf16,
                "bfloat16_mfu_goal_met": {
                    c: (m >= GOALS["bfloat16_mfu"] if m is not None else None)
                    for c, m in bf16.items()
                },
                "best_ratio_over_reference": {
                    c: max(r["ours_over_reference"] for r in ratios if r["config"] == c)
                    for c in {r["config"] for r in ratios}
                },
                "images_per_s": {f"{r['config']}:{r['dtype']}": r["images_per_s"] for r in train},
                "anchor_jax_images_per_s_per_v100": ANCHOR["jax_images_per_s_per_gpu"],
                "skipped": [
                    {k: r.get(k) for k in ("part", "config", "dtype", "skipped")}
                    for r in self.rows
                    if "skipped" in r
                ],
                "errors": [
                    {k: r.get(k) for k in ("part", "config", "dtype", "error")}
                    for r in self.rows
                    if "error" in r
                ],
                "out": self.out,
            }
        )

    def run(self) -> None:
        args = self.args
        self.env_row()
        plan = []
        if "train" in args.parts:
            plan += [("train", c, d) for c in args.configs for d in args.dtypes]
        if "reference" in args.parts:
            plan.append(("reference", None, None))
        if "sample" in args.parts:
            plan.append(("sample", CONFIGS[SAMPLE_CONFIG], None))
        if "likelihood" in args.parts:
            plan.append(("likelihood", CONFIGS[SAMPLE_CONFIG], None))
        for i, (kind, config, dtype) in enumerate(plan):
            later = [p[0] for p in plan[i + 1 :]]
            log(f"--- {kind} {config or ''} {dtype or ''} ({self.left():.0f} s left)")
            if kind == "reference":
                self.reference(later)
                continue
            label = {"config": config} | ({"dtype": dtype} if dtype else {})
            extra = {
                "config": config,
                "dtype": dtype,
                "batch": args.batch,
                "steps": args.train_steps,
                "warmup": args.train_warmup,
                "sample_batch": args.sample_batch,
                "dpm_steps": args.dpm_steps,
                "pc_steps": args.pc_steps,
                "lik_batch": args.lik_batch,
            }
            self.worker(kind, extra, later, label)
        self.summary()
        self.file.close()
        log(f"rows written to {self.out}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker, json.loads(args.spec))
        return
    runner = Runner(args)

    def stop(signum, frame):
        runner.kill()
        runner.emit({"part": "summary", "error": f"stopped by signal {signum}"})
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.run()


if __name__ == "__main__":
    main()
