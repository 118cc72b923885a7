"""Start-up time with and without the persistent compilation cache: wall time of
``main.py --mode train`` for one step (start-up, compilation, the step, the final checkpoint).

    python bench/startup.py                                    # MNIST DDPM++ (VP), batch 8
    python bench/startup.py --config configs/ve/cifar10_ncsnpp_continuous.py
    python bench/startup.py --config configs/toy/moons.py --runs cold,warm --config.data.n_test=100

Three runs into fresh work directories: ``cold`` (an empty cache), ``warm`` (the cache the cold
run filled: what a resume, an evaluation or a second run of the same setup costs) and ``off``
(``--compilation_cache=off``). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/mnist/ddpmpp_vp.py")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", default="cold,warm,off", help="comma-separated: cold, warm, off")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args, extra = p.parse_known_args(argv)  # the rest: --config.a.b=value overrides
    bad = [a for a in extra if not a.startswith("--config.")]
    if bad:
        p.error(f"unknown arguments {bad} (overrides look like --config.a.b=value)")
    args.overrides = extra
    return args


def _run(config: str, workdir: str, cache: str, batch: int, overrides: list[str]) -> dict:
    cmd = [
        sys.executable,
        os.path.join(ROOT, "main.py"),
        f"--config={config}",
        f"--workdir={workdir}",
        "--mode=train",
        f"--compilation_cache={cache}",
        "--config.training.n_iters=1",
        "--config.training.n_jitted_steps=1",
        f"--config.training.batch_size={batch}",
        "--config.training.snapshot_sampling=False",
        "--config.training.eval_freq=1000000",
        "--config.training.log_freq=1",
        *overrides,
    ]
    env = dict(os.environ, JAX_LOG_COMPILES="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    hits = len(re.findall(r"[Pp]ersistent compilation cache hit", proc.stderr))
    return {"seconds": round(seconds, 2), "cache_hits": hits}


def main(argv=None) -> dict:
    args = _parse(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs) - {"cold", "warm", "off"}
    if unknown:
        raise SystemExit(f"--runs: unknown {sorted(unknown)}; use cold, warm, off")
    out: dict = {"config": args.config, "batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="scoresde-startup-") as tmp:
        cache = os.path.join(tmp, "cache")
        for name in runs:
            where = "off" if name == "off" else cache
            out[name] = _run(
                args.config, os.path.join(tmp, name), where, args.batch, args.overrides
            )
    if "cold" in out and "warm" in out:
        out["warm_over_cold"] = round(out["warm"]["seconds"] / out["cold"]["seconds"], 3)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
