"""Inpainting and colorization: ``--mode sample --config.sampling.task=inpaint|colorize``, with
inputs from ``sampling.task_split`` or ``sampling.task_inputs``; written to
``workdir/samples/<task>_step_<step>.{png,npz}``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core.mesh import (
    device_count,
    map_fixed_batches,
    put_global_batch,
    sharded_batch_fn,
)
from scoresde_jax.data import prepare_image, to_model_space
from scoresde_jax.io import images as plotting
from scoresde_jax.io.images import to_uint8
from scoresde_jax.run import experiment
from scoresde_jax.run.experiment import restore_experiment, to_host
from scoresde_jax.sampling import constraints

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _prepare(images: list[np.ndarray], image_size: int, num_channels: int, where: str):
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(
                f"{where}: image {i} has dtype {image.dtype}; inputs must be uint8 pixels (0-255)"
            )
        if image.ndim == 3 and image.shape[-1] == 4:
            image = image[..., :3]  # drop alpha
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3)):
            raise ValueError(
                f"{where}: image {i} has shape {image.shape}; expected [H, W], [H, W, 1] or "
                "[H, W, 3]"
            )
        kw = dict(image_size=image_size, num_channels=num_channels, geometry="resize_small_crop")
        try:
            out.append(prepare_image(image, **kw))
        except ValueError as err:
            raise ValueError(f"{where}: image {i} of shape {image.shape}: {err}") from err
    return np.stack(out)


def _read_npz(path: Path) -> np.ndarray:
    with np.load(path) as f:
        names = list(f.keys())
        for name in ("images", "samples", "originals"):
            if name in names:
                return f[name]
        if len(names) == 1:
            return f[names[0]]
    raise ValueError(
        f"{path} holds the arrays {names}; name the input images 'images' (uint8 [N, H, W, C])"
    )


def _decode(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            return np.asarray(im.convert("L" if gray else "RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {path} as an image: {err}") from err


def load_task_inputs(
    path: str | os.PathLike, *, image_size: int, num_channels: int, limit: int | None = None
) -> np.ndarray:
    """The first ``limit`` images, uint8 ``[N, size, size, channels]``, of an ``.npz`` (array
    ``images``, ``samples`` or its only one), an image file or a folder of them (name order,
    recursive); resized (smaller side) and center-cropped, gray <-> RGB as needed."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"sampling.task_inputs={os.fspath(path)} does not exist")
    if p.is_dir():
        files = sorted(
            (f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES),
            key=lambda f: f.relative_to(p).as_posix(),
        )
        if not files:
            raise FileNotFoundError(f"{p} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
        files = files[:limit] if limit else files
        images = [_decode(f) for f in files]
    elif p.suffix.lower() == ".npz":
        array = _read_npz(p)
        if array.ndim not in (3, 4) or len(array) == 0:
            raise ValueError(
                f"{p}: the images have shape {array.shape}; expected uint8 [N, H, W, C] or "
                "[N, H, W] with N >= 1"
            )
        images = list(array[:limit] if limit else array)
    elif p.suffix.lower() in _IMAGE_SUFFIXES:
        images = [_decode(p)]
    else:
        raise ValueError(
            f"sampling.task_inputs={os.fspath(path)}: use an .npz of uint8 images, an image file "
            f"({', '.join(_IMAGE_SUFFIXES)}) or a folder of images"
        )
    return _prepare(images, image_size, num_channels, os.fspath(p))


def _check_image_task(config, task: str) -> None:
    d, s = config.data, config.sampling
    if d.get("dataset_kind", "image") != "image":
        raise ValueError(f"task {task!r} needs image data; {d.dataset!r} is not an image dataset")
    if str(s.method).lower() != "pc":
        raise ValueError(
            f"task {task!r} runs the predictor-corrector sampler (sampling.predictor, "
            f"sampling.corrector, ...); set --config.sampling.method=pc (got {s.method!r})"
        )
    if task == "colorize" and d.num_channels != 3:
        raise ValueError(
            f"colorization needs a model of 3-channel (RGB) images, but config.data.num_channels="
            f"{d.num_channels} (dataset {d.dataset}). Train on color images, e.g. "
            "configs/mnist/ddpmpp_vp_colored.py (MNIST digits in color) or a CIFAR-10 config."
        )
    for field in ("num_inputs", "num_completions"):
        if int(s.get(field, 1)) < 1:
            raise ValueError(f"sampling.{field} must be >= 1, got {s.get(field)}")


def _image_task(config, workdir: str, task: str) -> dict:
    _check_image_task(config, task)
    d, s = config.data, config.sampling
    num_inputs = int(s.get("num_inputs", 8))
    k = int(s.get("num_completions", 4))
    inputs_path = s.get("task_inputs", None)
    if inputs_path:
        originals = load_task_inputs(
            inputs_path, image_size=d.image_size, num_channels=d.num_channels, limit=num_inputs
        )
        origin = os.fspath(inputs_path)
    else:
        source = experiment.image_source_from_config(d, s.get("task_split", "test"))
        originals, _ = source.get(np.arange(min(num_inputs, len(source))))
        origin = source.name
    mask = None
    if task == "inpaint":
        mask = constraints.resolve_mask(
            s.get("inpaint_mask", "center_square"), d.image_size, jax.random.PRNGKey(config.seed)
        )

    t0 = time.perf_counter()
    exp, state, step = restore_experiment(config, workdir)
    n_dev = device_count(exp.mesh)
    options = dict(
        predictor=s.predictor,
        corrector=s.corrector,
        snr=s.snr,
        n_steps=s.n_steps_each,
        num_steps=s.get("num_steps", None),
        eps=s.get("eps", 1e-3),
        denoise=s.noise_removal,
        perturb_known_init=s.get("perturb_known_init", False),
    )

    def per_device(params, key, x):  # x: the images (inpaint) or their gray levels (colorize)
        if task == "inpaint":
            res = constraints.inpaint(exp.sde, exp.score_fn(params), key, x, mask, **options)
        else:
            res = constraints.colorize(exp.sde, exp.score_fn(params), key, x, **options)
        return res.x, jnp.full((x.shape[0],), res.nfe, jnp.int32)

    cond = to_model_space(originals, centered=d.centered)
    if task == "colorize":
        cond = np.mean(cond, axis=-1, keepdims=True)  # the gray level, constraints.to_gray

    batch = np.repeat(cond, k, axis=0)  # input i -> rows i*k ... i*k + k - 1
    per_round = max(int(s.get("batch_size", 64)), 1)
    round_size = -(-min(len(batch), per_round) // n_dev) * n_dev
    log.info(
        f"{task}: {len(originals)} inputs from {origin} x {k} completions on {n_dev} devices, "
        f"step {step}"
    )
    fn = sharded_batch_fn(exp.mesh, per_device, 1, 2)
    key = jax.random.fold_in(exp.eval_key, 3 * 10**6 + step)
    n_rounds, nfe = -(-len(batch) // round_size), 0

    def run_round(rows):
        nonlocal nfe
        r, t1 = int(rows[0]) // round_size, time.perf_counter()
        x, nfe_r = fn(
            state.ema_params, jax.random.fold_in(key, r), put_global_batch(batch[rows], exp.mesh)
        )
        nfe, m = int(to_host(nfe_r).max()), min(round_size, len(batch) - r * round_size)
        seconds = time.perf_counter() - t1
        log.info(
            f"{task}: round {r + 1}/{n_rounds}, {m} images, {nfe} score evaluations, "
            f"{seconds:.1f} s"
        )
        return (to_host(x),)

    # The last round is padded with copies of its first row.
    rows = np.arange(n_rounds * round_size)
    rows[len(batch) :] = (n_rounds - 1) * round_size
    (x,) = map_fixed_batches(run_round, rows, round_size)
    x, seconds = x[: len(batch)], time.perf_counter() - t0

    n, h, w, c = originals.shape
    completions = to_uint8(x, centered=d.centered).reshape(n, k, h, w, c)
    out = {
        "task": task,
        "step": step,
        "num_inputs": n,
        "num_completions": k,
        "inputs": origin,
        "nfe": nfe,
        "seconds": round(seconds, 2),
        "perturb_known_init": bool(options["perturb_known_init"]),
    }
    ref = originals.astype(np.float64)[:, None] / 255.0
    err2 = np.square(completions.astype(np.float64) / 255.0 - ref)
    if task == "inpaint":
        known = np.broadcast_to(mask > 0.5, (h, w, c))
        shown = np.where(known, originals, np.uint8(128))  # missing pixels in mid gray
        out["mask"] = str(s.get("inpaint_mask"))
        out["known_fraction"] = float(known.mean())
        out["mse_known"] = float(err2[..., known].mean()) if known.any() else None
        out["mse_unknown"] = float(err2[..., ~known].mean()) if (~known).any() else None
        arrays = {"mask": mask.astype(np.uint8)}
    else:
        gray = to_uint8(cond, centered=d.centered)
        shown = np.repeat(gray, 3, axis=-1)
        # The constraint of the method: the channel mean of every completion is the input's gray
        # level (before the uint8 rounding and clipping of the picture).
        x01 = (x + 1.0) / 2.0 if d.centered else x
        g01 = (cond + 1.0) / 2.0 if d.centered else cond
        gray_err = np.abs(x01.reshape(n, k, h, w, c).mean(-1) - g01[:, None, ..., 0])
        out["gray_max_abs_error"] = float(gray_err.max())
        out["mse"] = float(err2.mean())
        arrays = {"gray": gray}
    if jax.process_index() != 0:
        return out
    out_dir = os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{task}_step_{step}")
    rows = np.concatenate([originals[:, None], shown[:, None], completions], axis=1)
    out["png"] = plotting.save_image_grid(stem + ".png", rows.reshape(-1, h, w, c), ncol=k + 2)
    np.savez(stem + ".npz", originals=originals, inputs=shown, completions=completions, **arrays)
    out["npz"] = stem + ".npz"
    out["png_layout"] = "rows: inputs; columns: original, input, then the completions"
    return out


def inpaint(config, workdir: str) -> dict:
    """``--mode sample --config.sampling.task=inpaint``."""
    return _image_task(config, workdir, "inpaint")


def colorize(config, workdir: str) -> dict:
    """``--mode sample --config.sampling.task=colorize``."""
    return _image_task(config, workdir, "colorize")
