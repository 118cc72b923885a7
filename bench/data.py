"""Input pipeline throughput: images/s of the training batches ``--mode train`` reads.

    python bench/data.py --shared ../shared      # CIFAR-10 npz, 256-px JPEGs; 1, 2, 4 workers
    python bench/data.py --sources jpeg --jpeg_images 512 --workers 1 2
    python bench/data.py --sources jpeg --jpeg_dir DIR    # DIR kept (written if missing)

The iterator is the trainer's own (``run.trainer.train_iterator``: the config's source opened by
``image_source_from_config``, ``TrainIterator`` with ``config.data.num_workers`` threads, random
flips and the [0, 1] scaling of the config): CIFAR-10 reads the npz under
``<shared>/data/cifar10_partial/`` (``--shared`` or ``$SCORESDE_SHARED``, or ``--cifar PATH``)
with ``configs/ve/cifar10_ncsnpp_continuous.py``; the JPEG source is a folder written here in a
temporary directory (CIFAR images, or random ones without them, upscaled with some noise so the
files are photo-sized) read with ``configs/ve/church_ncsnpp_continuous.py`` (LSUN: smaller side
resized, center crop). The consumer takes batches as fast as they come; a round lasts at least
``--round_s`` seconds and images/s is the median over ``--rounds`` rounds after ``--warmup``
batches (``images_per_cpu_s``: per second of CPU time of all threads, which a busy machine
changes less). ``stages_ms`` times one batch's parts in this thread: ``read`` (the source's ``get``:
decoding and fitting) and ``convert`` (flips and float scaling). One JSON object per (source,
workers) on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "cifar10": "configs/ve/cifar10_ncsnpp_continuous.py",
    "jpeg": "configs/ve/church_ncsnpp_continuous.py",
}
# Issue 15's floor where no GPU figure exists: twice what a GPU step consumes at batch 128.
GOALS = {32: 1000.0, 256: 200.0}


def _log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _cifar_path(args) -> Path:
    if args.cifar:
        return Path(args.cifar)
    shared = args.shared or os.environ.get("SCORESDE_SHARED")
    if not shared:
        raise SystemExit("give --shared DIR (or set SCORESDE_SHARED) or --cifar PATH")
    folder = Path(shared) / "data" / "cifar10_partial"
    found = sorted(folder.glob("*.npz"))
    if not found:
        raise SystemExit(f"no .npz file in {folder}")
    return found[0]


def _write_jpegs(folder: Path, args, cifar: Path | None) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    if cifar is not None and cifar.exists():
        with np.load(cifar) as f:
            pool = f["train_images"][: args.jpeg_images]
    else:
        pool = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)  # blocky random images
    height, width = args.jpeg_size, args.jpeg_width or args.jpeg_size
    for i in range(args.jpeg_images):
        big = Image.fromarray(pool[i % len(pool)]).resize((width, height), Image.Resampling.BICUBIC)
        x = np.asarray(big, np.float32) + rng.normal(0.0, args.jpeg_noise, (height, width, 3))
        image = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
        image.save(folder / f"{i:06d}.jpg", quality=args.jpeg_quality)


def _config(source: str, path: Path, args, workers: int):
    from scoresde_jax.run.summary import load_config

    config = load_config(CONFIGS[source])
    config.data.path = str(path)
    if source == "jpeg":
        config.data.image_size = args.jpeg_size
    config.data.num_workers = workers
    config.training.batch_size = args.batch
    config.training.n_jitted_steps = args.n_jitted_steps
    return config


def _stages(config) -> dict:
    """Milliseconds of one batch's read and conversion in this thread (medians of 3)."""
    from scoresde_jax.data import train_batch, train_example_indices
    from scoresde_jax.run import experiment
    from scoresde_jax.run.trainer import train_batch_options

    source = experiment.image_source_from_config(config.data, "train")
    options = train_batch_options(config)
    read, whole = [], []
    for step in range(4):
        idx = train_example_indices(
            len(source), step, global_batch_size=options["global_batch_size"], seed=config.seed
        )
        t0 = time.perf_counter()
        source.get(idx)
        t1 = time.perf_counter()
        train_batch(source, step, seed=config.seed, **options)
        t2 = time.perf_counter()
        if step:  # the first warms caches
            read.append(t1 - t0)
            whole.append(t2 - t1)
    r, w = statistics.median(read), statistics.median(whole)
    return {"read": 1e3 * r, "convert": 1e3 * max(0.0, w - r), "batch": 1e3 * w}


def _measure(config, args) -> dict:
    from scoresde_jax.run.trainer import train_iterator

    per_call = args.batch * args.n_jitted_steps
    rates, cpu_rates = [], []
    with train_iterator(config, 0) as it:
        for _ in range(args.warmup):
            next(it)
        for _ in range(args.rounds):
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            while True:
                _, chunk = next(it)
                n += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= args.round_s and n >= config.data.num_workers:
                    break
            rates.append(n * per_call / elapsed)
            # CPU seconds of all this process's threads: what the images cost whatever the load.
            cpu_rates.append(n * per_call / max(time.process_time() - c0, 1e-9))
    assert chunk.dtype == np.float32 and chunk.shape[:2] == (args.n_jitted_steps, args.batch)
    return {
        "rates": rates,
        "cpu_rates": cpu_rates,
        "shape": list(chunk.shape[2:]),
        "range": [chunk.min(), chunk.max()],
    }


def _decode_details(source: str, path: Path, config) -> dict:
    import PIL
    from PIL import Image, features

    from scoresde_jax.data import detect_source
    from scoresde_jax.data.formats.base import dataset_spec
    from scoresde_jax.data.formats.folder import IMAGE_EXTENSIONS
    from scoresde_jax.data.geometry import describe_conversion
    from scoresde_jax.run import experiment

    data = experiment.image_source_from_config(config.data, "train")
    out = {"format": detect_source(path), "examples": len(data), "name": data.name}
    if source == "jpeg":
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        with Image.open(files[0]) as im:
            native = (im.height, im.width, len(im.getbands()))
        out.update(
            decoder=f"PIL {PIL.__version__}",
            libjpeg_turbo=bool(features.check_feature("libjpeg_turbo")),
            mean_file_kib=sum(f.stat().st_size for f in files) / len(files) / 1024,
            native_shape=list(native),
        )
    else:
        native = data.image_shape
        out.update(decoder="none (arrays in memory)", native_shape=list(native))
    out["conversion"] = describe_conversion(
        native,
        image_size=config.data.image_size,
        num_channels=config.data.num_channels,
        geometry=dataset_spec(config.data.dataset).geometry,
    )
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", nargs="+", default=["cifar10", "jpeg"], choices=sorted(CONFIGS))
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--batch", type=int, default=128, help="global batch size")
    p.add_argument("--n_jitted_steps", type=int, default=1, help="batches per iterator item")
    p.add_argument("--warmup", type=int, default=3, help="untimed items first")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--round_s", type=float, default=2.0, help="least seconds per round")
    p.add_argument("--shared", help="the shared folder holding data/cifar10_partial/")
    p.add_argument("--cifar", help="the CIFAR-10 npz itself")
    p.add_argument("--jpeg_dir", help="the image folder to read (written first if missing)")
    p.add_argument("--jpeg_images", type=int, default=512, help="JPEG files to write")
    p.add_argument("--jpeg_size", type=int, default=256, help="their height (and model size)")
    p.add_argument("--jpeg_width", type=int, default=None, help="their width (default: height)")
    p.add_argument("--jpeg_quality", type=int, default=90)
    p.add_argument("--jpeg_noise", type=float, default=6.0, help="pixel noise std (file size)")
    args = p.parse_args(argv)

    cifar = None  # the JPEGs are made from CIFAR images where there are some
    try:
        cifar = _cifar_path(args)
    except SystemExit:
        if "cifar10" in args.sources:
            raise
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        paths = {"cifar10": cifar}
        if "jpeg" in args.sources:
            paths["jpeg"] = Path(args.jpeg_dir) if args.jpeg_dir else Path(tmp) / "jpeg"
            if not paths["jpeg"].exists():
                paths["jpeg"].mkdir(parents=True)
                _log(f"writing {args.jpeg_images} JPEGs to {paths['jpeg']}")
                _write_jpegs(paths["jpeg"], args, cifar)
        for source in args.sources:
            stages = None
            for workers in args.workers:
                config = _config(source, paths[source], args, workers)
                if stages is None:
                    stages = _stages(config)
                    details = _decode_details(source, paths[source], config)
                load_before = os.getloadavg()
                _log(f"{source}: {workers} worker(s) ...")
                m = _measure(config, args)
                size = config.data.image_size
                images_per_s = statistics.median(m["rates"])
                row = {
                    "bench": "data",
                    "source": source,
                    "config": CONFIGS[source],
                    "workers": workers,
                    "global_batch": args.batch,
                    "n_jitted_steps": args.n_jitted_steps,
                    "resolution": size,
                    "image_shape": m["shape"],
                    "images_per_s": images_per_s,
                    "images_per_s_rounds": m["rates"],
                    "batches_per_s": images_per_s / args.batch,
                    "images_per_cpu_s": statistics.median(m["cpu_rates"]),
                    "goal_images_per_s": GOALS.get(size),
                    "meets_goal": None if size not in GOALS else images_per_s >= GOALS[size],
                    "stages_ms": stages,
                    "decode": details,
                    "value_range": [float(v) for v in m["range"]],
                    "cpu_count": os.cpu_count(),
                    "usable_cpus": len(os.sched_getaffinity(0))
                    if hasattr(os, "sched_getaffinity")
                    else os.cpu_count(),
                    "cpu": platform.processor() or platform.machine(),
                    "loadavg_before": list(load_before),
                    "loadavg_after": list(os.getloadavg()),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


if __name__ == "__main__":
    main()
