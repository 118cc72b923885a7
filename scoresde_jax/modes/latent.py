"""``--mode encode | interpolate | temperature``: probability-flow latent manipulation of the
newest checkpoint's EMA parameters (paper, Section 4.3), pictures and JSON in ``workdir/latent/``.
The ODE (``latent.ode_solver``, ``latent.rtol``/``atol``) runs from ``sampling.eps`` to ``T``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.core import odeint
from scoresde_jax.core.mesh import (
    device_count,
    map_fixed_batches,
    put_global_batch,
    sharded_batch_fn,
)
from scoresde_jax.data import TOY_GMM, make_toy_dataset, to_model_space
from scoresde_jax.io import images as plotting
from scoresde_jax.io import plots
from scoresde_jax.io.files import atomic_savez
from scoresde_jax.run import experiment
from scoresde_jax.run.experiment import parse_floats, restore_experiment, to_host
from scoresde_jax.sampling.latent import (
    interpolate,
    prior_moment_zscores,
    round_trip,
    temperature_sample,
)

log = logging.getLogger(__name__)

_SPLITS = {"train": 0, "test": 1}  # toy data: seed offset of each split (as in evaluate/train)


def _restore(config, workdir: str, key_offset: int):
    """The checked ODE options of ``config.latent``, the experiment, EMA parameters, step, key."""
    lc = config.latent
    if str(lc.split) not in _SPLITS:
        raise ValueError(f"latent.split={lc.split!r}: use 'test' or 'train'")
    odeint.check_solver(str(lc.ode_solver))
    if not (lc.rtol > 0 and lc.atol > 0):
        raise ValueError(f"latent.rtol={lc.rtol}, latent.atol={lc.atol}: both must be positive")
    ode = dict(
        eps=float(config.sampling.eps),
        rtol=float(lc.rtol),
        atol=float(lc.atol),
        solver=str(lc.ode_solver),
    )
    exp, state, step = restore_experiment(config, workdir)
    key = jax.random.fold_in(exp.eval_key, key_offset * 10**6 + step)
    return ode, exp, state.ema_params, step, key


def _check_count(value: int, field: str, least: int = 1) -> int:
    if int(value) < least:
        raise ValueError(f"{field}={value}: need at least {least}")
    return int(value)


def _examples(config, exp, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` examples of ``latent.split`` in model space, and the uint8 images (None for toys)."""
    split = str(config.latent.split)
    d = config.data
    if not exp.is_image:
        return make_toy_dataset(d.dataset, n, d.seed + _SPLITS[split]), None
    source = experiment.image_source_from_config(d, split)
    if n > len(source):
        raise ValueError(f"asked for {n} examples but the {split} split has {len(source)}")
    # A fixed random choice (not the first n, which may be sorted by class).
    idx = np.sort(np.random.default_rng(config.seed).choice(len(source), n, replace=False))
    images, _ = source.get(idx)
    return to_model_space(images, centered=d.centered), images


def _run_sharded(exp, config, fn, num_outputs: int, params, key, batched: tuple, what: str):
    """``fn(params, key, *batched) -> outputs`` per device on the host arrays ``batched``,
    ``latent.batch_size`` rows at a time (a multiple of the device count, so it compiles once);
    chunk ``c`` gets the key ``fold_in(key, c)``."""
    n_dev = device_count(exp.mesh)
    n = len(batched[0])
    chunk = -(-min(int(config.latent.batch_size), n) // n_dev) * n_dev
    run = sharded_batch_fn(exp.mesh, fn, len(batched), num_outputs)
    chunks = itertools.count()

    def run_chunk(rows):
        c, t0 = next(chunks), time.perf_counter()
        parts = [put_global_batch(np.asarray(a[rows]), exp.mesh) for a in batched]
        out = [to_host(o) for o in run(params, jax.random.fold_in(key, c), *parts)]
        done, seconds = min((c + 1) * chunk, n), time.perf_counter() - t0
        log.info("%s: %d/%d rows done (%d devices) in %.1f s", what, done, n, n_dev, seconds)
        return out

    # Padded with copies of the last row, not zeros: a device's adaptive ODE solve shares its
    # step sizes over all its rows.
    rows = np.minimum(np.arange(-(-n // chunk) * chunk), n - 1)
    return tuple(o[:n] for o in map_fixed_batches(run_chunk, rows, chunk))


def _write_report(workdir: str, report: dict, plot, **arrays) -> dict:
    """On process 0: ``plot(png)``, ``arrays`` and ``report`` in
    ``workdir/latent/<mode>_step_<step>.{png,npz,json}``."""
    path = os.path.join(workdir, "latent")
    stem = os.path.join(path, f"{report['mode']}_step_{report['step']}")
    report["png"], report["npz"] = stem + ".png", stem + ".npz"
    if jax.process_index() == 0:
        os.makedirs(path, exist_ok=True)
        plot(stem + ".png")
        atomic_savez(stem + ".npz", **arrays)
        with open(stem + ".json", "w") as f:
            json.dump(report, f, indent=2)
    return report


def _latent_picture(z: np.ndarray, prior_std: float) -> np.ndarray:
    """Latents as gray images: +-3 prior standard deviations span black to white."""
    return plotting.to_uint8(np.clip(z / (3 * prior_std), -1, 1), centered=True)


def _toy_data(config) -> np.ndarray:
    """Test-split points behind the toy pictures."""
    return make_toy_dataset(config.data.dataset, 5000, config.data.seed + 1)


def _per_example(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1)


def encode_mode(config, workdir: str) -> dict:
    """``--mode encode``: ``latent.num_inputs`` examples of ``latent.split`` encoded at ``T`` and
    decoded back. Errors are in model units; the flow can be ill-conditioned at a few entries (an
    anti-aliased pixel on a sharp ink boundary, a point between modes), so the largest error
    shrinks more slowly with the tolerance. ``latent_*``: ``prior_moment_zscores``."""
    n = _check_count(config.latent.num_inputs, "latent.num_inputs", 2)
    ode, exp, params, step, key = _restore(config, workdir, 5)
    x, images = _examples(config, exp, n)
    sde = exp.sde
    log.info("encode: %d examples, step %d, %s", n, step, ode)

    def per_device(params, key, x):
        del key
        rt = round_trip(sde, exp.score_fn(params), x, **ode)
        return rt.z, rt.x_rec, jnp.broadcast_to(rt.nfe, (x.shape[0],))

    t0 = time.perf_counter()
    z, x_rec, nfe = _run_sharded(exp, config, per_device, 3, params, key, (x,), "encode")
    seconds = time.perf_counter() - t0
    err = np.abs(_per_example(x_rec) - _per_example(x))
    stats = jax.device_get(prior_moment_zscores(jnp.asarray(z), sde.prior_std))
    report = {
        "step": step,
        "mode": "encode",
        "num_inputs": n,
        "split": str(config.latent.split),
        "ode": ode,
        "max_abs_error": float(np.nanmax(err)),
        "p99_abs_error": float(np.nanquantile(err, 0.99)),
        "median_abs_error": float(np.nanmedian(err)),
        "mean_abs_error": float(np.nanmean(err)),
        "rms_error": float(np.sqrt(np.nanmean(err**2))),
        "failed_solves": int(np.sum(~np.isfinite(err).all(-1))),
        "nfe_round_trip_mean": float(np.mean(nfe)),
        "nfe_round_trip_max": int(np.max(nfe)),
        "seconds": seconds,
        "prior_std": float(sde.prior_std),
    }
    report.update({f"latent_{k}": float(v) for k, v in stats.items()})
    if exp.is_image:
        rec_images = plotting.to_uint8(x_rec, centered=config.data.centered)
        report["changed_pixel_fraction"] = float(np.mean(rec_images != images))
    else:
        report["latent_mean_per_dim"] = [float(v) for v in z.mean(0)]
        report["latent_cov"] = np.cov(z.T).tolist()

    def plot(png):
        if exp.is_image:
            rows = np.stack([images, rec_images, _latent_picture(z, sde.prior_std)])
            title = f"step {step}: max |error| {report['max_abs_error']:.2g}"
            plots.labeled_image_grid(png, rows, ["original", "decoded", "latent"], title=title)
        else:
            plots.plot_toy_encoding(
                png,
                data=x,
                latents=z,
                reconstructions=x_rec,
                prior_std=sde.prior_std,
                title=f"{config.data.dataset}: {config.training.sde}, step {step}, "
                f"max |x - decode(encode(x))| = {report['max_abs_error']:.2g}",
            )

    return _write_report(workdir, report, plot, x=x, z=z, x_rec=x_rec, nfe=nfe)


def interpolate_mode(config, workdir: str) -> dict:
    """``--mode interpolate``: ``latent.num_pairs`` pairs joined by
    ``latent.num_interpolation_steps`` decoded points of a great circle through their latents."""
    pairs = _check_count(config.latent.num_pairs, "latent.num_pairs")
    num = _check_count(config.latent.num_interpolation_steps, "latent.num_interpolation_steps", 2)
    ode, exp, params, step, key = _restore(config, workdir, 6)
    x, images = _examples(config, exp, 2 * pairs)
    x0, x1 = x[:pairs], x[pairs:]
    sde = exp.sde
    log.info("interpolate: %d pairs x %d points, step %d, %s", pairs, num, step, ode)

    def per_device(params, key, x0, x1):
        del key
        res = interpolate(sde, exp.score_fn(params), x0, x1, num, **ode)
        return res.x, res.z, jnp.broadcast_to(res.nfe, (x0.shape[0],))

    t0 = time.perf_counter()
    path, zpath, nfe = _run_sharded(
        exp, config, per_device, 3, params, key, (x0, x1), "interpolate"
    )
    seconds = time.perf_counter() - t0
    end_err = np.maximum(
        np.abs(_per_example(path[:, 0]) - _per_example(x0)).max(-1),
        np.abs(_per_example(path[:, -1]) - _per_example(x1)).max(-1),
    )
    report = {
        "step": step,
        "mode": "interpolate",
        "num_pairs": pairs,
        "num_interpolation_steps": num,
        "ode": ode,
        "endpoint_max_abs_error": float(np.nanmax(end_err)),
        "nfe_mean": float(np.mean(nfe)),
        "nfe_max": int(np.max(nfe)),
        "seconds": seconds,
    }

    def plot(png):
        if exp.is_image:
            pics = plotting.to_uint8(path, centered=config.data.centered)
            labels = [f"pair {i + 1}" for i in range(pairs)]
            title = f"step {step}: slerp between latents, decoded"
            plots.labeled_image_grid(png, pics, labels, title=title)
        else:
            prior = np.asarray(sde.prior_sample(jax.random.fold_in(key, 1), (2000, 2)))
            plots.plot_toy_interpolation(
                png,
                data=_toy_data(config),
                paths=path,
                latent_paths=zpath,
                endpoints=(x0, x1),
                prior_samples=prior,
                title=f"{config.data.dataset}: {config.training.sde}, step {step}",
            )

    arrays = dict(x0=x0, x1=x1, interpolants=path, latents=zpath, nfe=nfe)
    return _write_report(workdir, report, plot, **arrays)


def temperature_mode(config, workdir: str) -> dict:
    """``--mode temperature``: ``latent.num_inputs`` latents ``tau * z`` decoded for each ``tau``
    of ``latent.temperatures``, the same base noise ``z`` in every row."""
    n = _check_count(config.latent.num_inputs, "latent.num_inputs")
    temps = parse_floats(config.latent.temperatures, "latent.temperatures")
    if any(t < 0 or not math.isfinite(t) for t in temps):
        raise ValueError(f"latent.temperatures={config.latent.temperatures!r}: need tau >= 0")
    ode, exp, params, step, key = _restore(config, workdir, 7)
    sde = exp.sde
    n_dev = device_count(exp.mesh)
    log.info("temperature: %d samples at each of %s, step %d, %s", n, temps, step, ode)

    def per_device(params_tau, key, index):
        params, tau = params_tau
        res = temperature_sample(
            sde, exp.score_fn(params), key, (index.shape[0], *exp.data_shape), tau, **ode
        )
        return res.x, jnp.broadcast_to(res.nfe, index.shape)

    # The row indices only fix how many samples each device draws; the base noise of device i in
    # chunk c comes from fold_in(fold_in(key, c), i), the same for every temperature.
    index = np.arange(n, dtype=np.int32)
    samples, per_temp = {}, {}
    t0 = time.perf_counter()
    for tau in temps:
        params_tau, what = (params, jnp.float32(tau)), f"temperature {tau:g}"
        x, nfe = _run_sharded(exp, config, per_device, 2, params_tau, key, (index,), what)
        samples[tau] = x
        stats = {"nfe_mean": float(np.mean(nfe)), "nfe_max": int(np.max(nfe))}
        flat = _per_example(x)
        stats["sample_std"] = float(flat.std(0).mean())  # spread across samples, per entry
        stats["finite"] = bool(np.isfinite(flat).all())
        if not exp.is_image and config.data.dataset == "gmm":
            stats["mean_true_logp"] = float(np.mean(np.asarray(TOY_GMM.logpdf(jnp.asarray(x)))))
        per_temp[f"{tau:g}"] = stats
    report = {
        "step": step,
        "mode": "temperature",
        "num_samples": n,
        "temperatures": temps,
        "ode": ode,
        "prior_std": float(sde.prior_std),
        "devices": n_dev,
        "per_temperature": per_temp,
        "seconds": time.perf_counter() - t0,
    }

    def plot(png):
        if exp.is_image:
            pics = np.stack(
                [plotting.to_uint8(samples[t], centered=config.data.centered) for t in temps]
            )
            labels = [rf"$\tau$ = {t:g}" for t in temps]
            title = f"step {step}: decoded $\\tau z$, the same $z$ in each row"
            plots.labeled_image_grid(png, pics, labels, title=title)
        else:
            title = f"{config.data.dataset}: {config.training.sde}, step {step}: decoded "
            title += "tau * z, same z"
            plots.plot_toy_temperature(png, data=_toy_data(config), samples=samples, title=title)

    arrays = dict(temperatures=np.asarray(temps), samples=np.stack(list(samples.values())))
    return _write_report(workdir, report, plot, **arrays)
