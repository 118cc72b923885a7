"""The PyTorch reference's training step on the same device, for ``bench/gpu.py``.

    python bench/gpu_reference.py --repo $SCORE_SDE_PYTORCH \
        --configs configs/vp/cifar10_ddpmpp_continuous.py --batch 128

Imports the modules of a yang-song/score_sde_pytorch checkout (``--repo``) and times its own
training step: ``losses.get_step_fn(train=True)`` with ``losses.optimization_manager`` (warm-up,
gradient clipping, Adam from ``losses.get_optimizer``) and the ``models.ema`` update, on random
data in [0, 1) through the config's data scaling, with ``torch.cuda.synchronize()`` around each
step. Needs torch, numpy and ml_collections only (no JAX): run it with the Python that has torch.

``--ops native`` (default) replaces ``torch.utils.cpp_extension.load`` while the reference is
imported, so its CUDA extensions (``op/upfirdn2d``, ``op/fused_act``) are not compiled, and sends
every ``upfirdn2d`` call, on any device, to the reference's own pure-PyTorch
``upfirdn2d_native`` (only the FIR resampling of NCSN++ uses it; DDPM++ never does). ``--ops
build`` lets the reference compile and use its CUDA ops (needs nvcc and ninja; minutes).

Prints one JSON row per config (or one ``skipped`` row saying why nothing ran: torch missing,
no CUDA device without ``--allow_cpu``).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import statistics
import sys
import time

MODULES = ("models.utils", "models.ncsnpp", "models.ddpm", "models.ema", "losses", "sde_lib")


def log(*parts) -> None:
    print("[gpu_reference]", *parts, file=sys.stderr, flush=True)


def emit(row: dict) -> None:
    print(json.dumps({"part": "reference", **row}), flush=True)


def import_reference(repo: str, ops: str) -> dict:
    import torch.utils.cpp_extension as cpp_extension

    # This project's own ``configs`` package would shadow the reference's (a namespace package,
    # which loses to a regular one wherever it sits on the path): take this checkout off it.
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != ours]
    sys.path.insert(0, os.path.abspath(repo))
    real_load = cpp_extension.load
    if ops == "native":
        cpp_extension.load = lambda *args, **kwargs: None
    try:
        mods = {name: importlib.import_module(name) for name in MODULES}
    finally:
        cpp_extension.load = real_load
    if ops == "native":
        upfirdn2d_module = sys.modules["op.upfirdn2d"]
        native = upfirdn2d_module.upfirdn2d_native

        def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
            return native(x, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])

        sys.modules["models.up_or_down_sampling"].upfirdn2d = upfirdn2d
    return mods


def load_config(repo: str, path: str, overrides: list[str]):
    rel = os.path.relpath(os.path.join(os.path.abspath(repo), path), os.path.abspath(repo))
    config = importlib.import_module(rel[: -len(".py")].replace(os.sep, ".")).get_config()
    for assignment in overrides:
        key, value = assignment.split("=", 1)
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        *sections, field = key.split(".")
        target = config
        for s in sections:
            target = getattr(target, s)
        if isinstance(getattr(target, field, None), float) and isinstance(value, int):
            value = float(value)
        setattr(target, field, value)
    return config


def make_sde(sde_lib, config):
    m = config.model
    kind = config.training.sde.lower()
    if kind == "vesde":
        return sde_lib.VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)
    if kind == "vpsde":
        return sde_lib.VPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)
    return sde_lib.subVPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)


def bench_config(torch, mods, args, path: str, device) -> dict:
    config = load_config(args.repo, path, args.override)
    config.device = device
    config.training.batch_size = args.batch
    torch.manual_seed(args.seed)
    model = mods["models.utils"].create_model(config)
    n_params = sum(p.numel() for p in model.parameters())
    ema = mods["models.ema"].ExponentialMovingAverage(model.parameters(), config.model.ema_rate)
    losses = mods["losses"]
    optimizer = losses.get_optimizer(config, model.parameters())
    state = {"optimizer": optimizer, "model": model, "ema": ema, "step": 0}
    step_fn = losses.get_step_fn(
        make_sde(mods["sde_lib"], config),
        train=True,
        optimize_fn=losses.optimization_manager(config),
        reduce_mean=config.training.reduce_mean,
        continuous=config.training.continuous,
        likelihood_weighting=config.training.likelihood_weighting,
    )
    shape = (args.batch, config.data.num_channels, config.data.image_size, config.data.image_size)
    centered = config.data.centered
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first, times, loss = [], [], None
    while len(times) < args.steps:
        data = torch.rand(shape, device=device)
        data = data * 2.0 - 1.0 if centered else data
        sync()
        start = time.perf_counter()
        loss = step_fn(state, data)
        sync()
        elapsed = time.perf_counter() - start
        if len(first) < max(args.warmup, 1):
            first.append(elapsed)
            continue
        times.append(elapsed)
        if len(times) >= 2 and time.time() + elapsed > args.deadline:
            break
    step_s = statistics.median(times)
    row = {
        "config": path,
        "model": config.model.name,
        "parameters": n_params,
        "batch": args.batch,
        "overrides": args.override,
        "warmup_s": first,
        "timed_steps": len(times),
        "step_s_median": step_s,
        "step_s_all": times,
        "images_per_s": args.batch / step_s,
        "loss": float(loss.item()),
        "upfirdn2d": "reference CUDA op" if args.ops == "build" else "reference upfirdn2d_native",
        "fir": bool(config.model.get("fir", False)),
    }
    if cuda:
        row["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        row["device_reserved_peak_mib"] = torch.cuda.max_memory_reserved() / 2**20
    log(f"{path}: {row['images_per_s']:.1f} images/s, step {step_s * 1e3:.1f} ms")
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", required=True)
    p.add_argument("--configs", nargs="+", required=True, help="paths inside the checkout")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--override", nargs="*", default=[])
    p.add_argument("--ops", default="native", choices=["native", "build"])
    p.add_argument("--allow_cpu", action="store_true")
    p.add_argument("--deadline", type=float, default=float("inf"), help="epoch seconds")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError as e:
        emit({"skipped": f"torch is not importable by {sys.executable}: {e}"})
        return
    if not torch.cuda.is_available() and not args.allow_cpu:
        emit({"skipped": f"torch {torch.__version__}: torch.cuda.is_available() is False"})
        return
    if not os.path.isdir(os.path.join(args.repo, "models")):
        emit({"skipped": f"{args.repo} is not a score_sde_pytorch checkout (no models/)"})
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {
        "torch_version": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "torch_threads": torch.get_num_threads(),
    }
    t0 = time.perf_counter()
    mods = import_reference(args.repo, args.ops)
    info["import_s"] = time.perf_counter() - t0
    for path in args.configs:
        if time.time() > args.deadline:
            emit({"config": path, "skipped": "time budget", **info})
            continue
        try:
            emit({**bench_config(torch, mods, args, path, device), **info})
        except Exception as e:  # noqa: BLE001 - one row saying what failed, then the next config
            import traceback

            traceback.print_exc(file=sys.stderr)
            emit({"config": path, "error": f"{type(e).__name__}: {e}", **info})
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
