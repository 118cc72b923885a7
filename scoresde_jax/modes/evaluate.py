"""Evaluation: checkpoint -> loss, likelihood and samples -> JSON report (and pictures).

Image evaluations write to ``workdir/eval/step_<step>/`` and resume (bits/dim after every batch,
samples after every round), so a preempted ``--mode eval`` run again continues where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scoresde_jax import xla_flags
from scoresde_jax.core.likelihood import LIKELIHOOD_ODE, bits_per_dim, log_likelihood
from scoresde_jax.core.mesh import (
    device_count,
    make_data_mesh,
    map_fixed_batches,
    sharded_batch_fn,
    sharded_sampler,
    to_global_array,
)
from scoresde_jax.data import (
    TOY_GMM,
    eval_batches,
    make_toy_dataset,
    num_eval_batches,
    to_model_space,
    toy_density,
)
from scoresde_jax.errors import ConfigError, MissingDataError
from scoresde_jax.io import images as plotting
from scoresde_jax.io.files import atomic_savez
from scoresde_jax.io.images import to_uint8
from scoresde_jax.metrics.feature_fd import classifier_fd, save_classifier_stats
from scoresde_jax.metrics.feature_net import classifier_for_dataset, load_classifier
from scoresde_jax.metrics.inception import find_inception_weights
from scoresde_jax.metrics.quality import (
    InceptionFeatures,
    inception_metrics,
    inception_statistics,
    save_reference_stats,
)
from scoresde_jax.run import draw, experiment, results, workdir_lock
from scoresde_jax.run.experiment import check_workdir, checkpoint_steps, restore_checkpoint, to_host

log = logging.getLogger(__name__)

# ``sample_metrics(config, make_batches) -> dict`` scores generated images; every call of
# ``make_batches()`` starts a new pass over ``[n, H, W, C]`` uint8 batches (one per metric).
SampleMetrics = Callable[[object, Callable[[], Iterator[np.ndarray]]], dict]


def gaussian_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Mean test NLL (nats) of a single Gaussian fitted by maximum likelihood to ``train``."""
    mu = train.mean(0)
    cov = np.cov(train.astype(np.float64), rowvar=False, bias=True)
    d = test.astype(np.float64) - mu
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    return float(np.mean(0.5 * (maha + logdet + train.shape[1] * math.log(2 * math.pi))))


def default_sample_metrics(config) -> SampleMetrics | None:
    """FID, KID and Inception Score where the Inception weights are found, and the project
    classifier's FD where the dataset has one. Asking for FID without weights or statistics raises
    here, before any sampling."""
    ec, d = config.eval, config.data
    parts = []
    explicit = ec.get("inception_weights", None)
    stats_path = ec.get("fid_stats_path", None)
    # Feature networks split each batch over the local devices. Every process reads the same
    # sample files, so with several processes each one scores them on its own devices.
    mesh = make_data_mesh(config.get("num_devices", None)) if jax.process_count() == 1 else None
    if stats_path and not os.path.exists(stats_path):
        raise MissingDataError(
            f"eval.fid_stats_path={stats_path!r} does not exist. Compute reference statistics "
            "with --mode stats (or use score_sde's / pytorch-fid's .npz files)."
        )
    skipped = {}
    try:
        weights = find_inception_weights(explicit)
    except FileNotFoundError as e:
        if explicit or stats_path:
            raise MissingDataError(str(e)) from None
        weights = None
        skipped["fid_kid_inception_score"] = (
            "skipped: no FID Inception weights are installed. " + " ".join(str(e).split())
        )
        log.warning("FID, KID and the Inception Score are skipped: %s", e)
    if weights is not None:
        features = InceptionFeatures(
            str(weights), mesh=mesh, batch_size=ec.get("inception_batch_size", 200)
        )
        keep = ec.get("kid_features", 10_000)
        parts.append(
            lambda make: inception_metrics(make(), features, stats_path, keep_features=keep)
        )
    name = classifier_for_dataset(str(d.dataset), d.image_size, d.num_channels)
    if name is not None:  # against the test-split statistics shipped with the classifier
        parts.append(lambda make: classifier_fd(make(), name, mesh=mesh))
    if not parts and not skipped:
        return None

    def run(config, make_batches) -> dict:
        out: dict = {"skipped_metrics": dict(skipped)} if skipped else {}
        for part in parts:
            result = part(make_batches)
            warnings = out.get("warnings", []) + result.pop("warnings", [])
            out.update(result)
            if warnings:
                out["warnings"] = warnings
        return out

    return run


def _keyed_stats(out_dir: str, stem: str, kind: str, settings: dict, compute) -> dict:
    """``compute(path, meta)`` writes ``<stem>_<kind>-<fp>.npz`` unless it exists;
    ``<stem>_<kind>.npz`` is a copy of the newest."""
    fp = results.fingerprint(settings)
    keyed = os.path.join(out_dir, f"{stem}_{kind}-{fp}.npz")
    stable = os.path.join(out_dir, f"{stem}_{kind}.npz")
    reused = os.path.exists(keyed)
    if reused:
        log.info("Reusing %s (statistics of the same settings)", keyed)
    else:
        compute(keyed, {"settings": results.canonical(settings), "fingerprint": fp})
    if not (os.path.exists(stable) and os.path.samefile(stable, keyed)):
        # A hard link (a copy where there are none) under a new temporary name, renamed over the
        # stable name: writing through an old link to the same file would change the keyed file.
        tmp = f"{stable}.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        try:
            os.link(keyed, tmp)
        except OSError:
            shutil.copyfile(keyed, tmp)
        os.replace(tmp, stable)
    return {
        kind: stable,
        f"{kind}_keyed": keyed,
        f"{kind}_fingerprint": fp,
        f"{kind}_reused": reused,
    }


def evaluate(config, workdir: str, *, sample_metrics: SampleMetrics | None = None) -> dict:
    """Evaluates checkpoints in ``workdir`` and writes JSON reports; returns the last report.

    Images (:func:`checkpoint_steps`): test loss, bits/dim (dequantized, ``eval.num_repeats``
    passes) and scored samples; toys: the newest checkpoint's test NLL, a fitted-Gaussian baseline,
    the true NLL where known, and samples. Work of identical settings is resumed or reused."""
    check_workdir(workdir)
    with workdir_lock.hold(os.path.join(workdir, "eval"), "eval", mode="eval"):
        if config.data.get("dataset_kind", "image") == "toy":
            return _evaluate_toy(config, workdir)
        if sample_metrics is None and config.eval.get("enable_sampling", False):
            sample_metrics = default_sample_metrics(config)
        report = {}
        for step in checkpoint_steps(config, workdir):
            report = _evaluate_images(config, workdir, step, sample_metrics)
        return report


def _mean_stderr(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def _weights(config, state) -> tuple[str, object]:
    """``eval.weights`` and the parameters of ``state`` it names."""
    weights = str(config.eval.get("weights", "ema")).lower()
    if weights not in ("ema", "raw"):
        raise ConfigError(f"eval.weights={weights!r}: use 'ema' or 'raw'.")
    return weights, state.ema_params if weights == "ema" else state.params


def _head(config, restored, weights: str) -> tuple[dict, dict]:
    """The settings every result of ``restored`` depends on, and the head of its report."""
    ckpt = results.checkpoint_settings(restored, weights=weights)
    network = results.network_settings(config)
    settings = {"checkpoint": ckpt, "network": network, "seed": int(config.seed)}
    report = {"step": restored.step, "dataset": config.data.dataset, "sde": config.training.sde}
    return settings, dict(report, weights=weights, checkpoint=dict(ckpt, path=restored.path))


def _finish_report(report: dict, workdir: str, step: int, is_main: bool) -> dict:
    report["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if is_main:
        kept, latest = results.write_report(os.path.join(workdir, "eval"), f"step_{step}", report)
        report["report_path"], report["latest_path"] = kept, latest
        log.info("Report written to %s (newest for this step: %s)", kept, latest)
    return results.json_ready(report)


class _ImageEval:
    """The restored experiment, common fingerprint settings and report of one checkpoint."""

    def __init__(self, config, workdir: str, step: int | None):
        self.config = config
        self.exp, self.restored = restore_checkpoint(config, workdir, step)
        self.step = self.restored.step
        self.weights, self.params = _weights(config, self.restored.state)
        self.pindex, self.pcount = jax.process_index(), jax.process_count()
        self.is_main = self.pindex == 0
        self.num_devices = device_count(self.exp.mesh) * self.pcount
        self.out_dir = os.path.join(workdir, "eval", f"step_{self.step}")
        self.eval_key = jax.random.fold_in(self.exp.eval_key, self.step)
        self.common, self.report = _head(config, self.restored, self.weights)
        self.common["num_devices"] = self.num_devices  # what every part's numbers depend on
        self.report["checkpoint"]["digests_verified"] = self.restored.verified
        self.settings: dict = {}
        self.reused: dict = {}
        if self.restored.skipped:
            self.report["skipped_checkpoints"] = list(self.restored.skipped)

    def batch_size(self, n_examples: int) -> int:
        """``eval.batch_size`` (fewer if fewer examples) rounded up to a multiple of the devices."""
        size = min(int(self.config.eval.batch_size), max(int(n_examples), 1))
        return -(-size // self.num_devices) * self.num_devices

    def split(self, split: str, **settings) -> tuple[tuple, dict]:
        """``(source, n_examples, global_batch_size)`` of a split and the settings of a pass."""
        source = experiment.image_source_from_config(self.config.data, split)
        max_examples = self.config.eval.get("max_examples", None)
        n = len(source) if max_examples is None else min(len(source), int(max_examples))
        size = self.batch_size(n)
        data = results.data_settings(self.config)
        return (source, n, size), dict(
            self.common, data=data, split=split, examples=n, batch_size=size, **settings
        )

    def per_example(self, fn, split: tuple, key, prepare, first: int = 0, desc: str = ""):
        """Yields ``(i, fn(params, fold_in(key, i), prepare(images)))`` for batches ``i >= first``
        of ``split``, on the real examples only."""
        source, n, batch_size = split
        kw = dict(global_batch_size=batch_size, process_count=self.pcount, max_examples=n)
        bar = dict(total=num_eval_batches(source, **kw), initial=first, desc=desc, leave=False)
        it = itertools.islice(eval_batches(source, process_index=self.pindex, **kw), first, None)
        for i, (images, _, mask) in enumerate(tqdm(it, disable=not self.is_main, **bar), first):
            x = to_global_array(np.asarray(prepare(images)), self.exp.mesh)
            out = fn(self.params, jax.random.fold_in(key, i), x)
            keep = to_host(to_global_array(np.asarray(mask), self.exp.mesh))
            yield i, [to_host(o)[keep] for o in out]

    def record(self, part: str, store, finished: list, total: int, units: str, **settings):
        """A part's settings and how many of its ``total`` ``units`` were ``finished`` (their
        completion times) on disk."""
        self.settings[part] = dict(
            store.settings, fingerprint=store.fingerprint, dir=store.path, **settings
        )
        noun = {"passes": "pass(es)", "rounds": "round(s)"}[units]
        self.reused[part] = {
            f"reused_{units}": len(finished),
            f"computed_{units}": total - len(finished),
            **results.reuse_note(max(finished, default=None), f"{len(finished)} finished {noun}"),
        }


def _evaluate_images(config, workdir: str, step: int | None, sample_metrics) -> dict:
    t0 = time.perf_counter()
    ev = _ImageEval(config, workdir, step)
    ec = config.eval
    if ev.is_main:
        log.info(
            f"Evaluating step {ev.step} ({ev.weights} weights, {ev.restored.path}) into "
            f"{ev.out_dir}"
        )
    if ec.get("enable_loss", True):
        _eval_loss(ev)
    if ec.get("enable_bpd", False):
        for split_i, split in enumerate(
            s.strip() for s in str(ec.get("bpd_dataset", "test")).split(",")
        ):
            _eval_bpd(ev, split, split_i)
    if ec.get("enable_sampling", False):
        _sample_rounds(ev, sample_metrics)
    num_samples = int(ec.get("num_samples", 0)) if ec.get("enable_sampling") else None
    fingerprint = results.fingerprint(
        {
            "parts": {k: v.get("fingerprint") for k, v in ev.settings.items()},
            "num_repeats": int(ec.get("num_repeats", 1)),
            "num_samples": num_samples,
        }
    )
    ev.report.update(settings=ev.settings, reused=ev.reused, fingerprint=fingerprint)
    ev.report["eval_seconds"] = time.perf_counter() - t0
    return _finish_report(ev.report, workdir, ev.step, ev.is_main)


# Training fields that define the loss evaluated on the test split.
_LOSS_FIELDS = frozenset(
    "loss likelihood_weighting importance_sampling reduce_mean ssm_num_projections ssm_noise "
    "ism_exact_trace".split()
)


def _eval_loss(ev: _ImageEval) -> None:
    """The training loss on the test split (recomputed every time: one pass, no ODE)."""
    exp, d = ev.exp, ev.config.data

    def per_example_loss(params, key, x):
        model_fn = lambda x, labels: exp.model.apply(params, x, labels, train=False)
        return (exp.loss_fn(model_fn, x, key)[1],)

    loss = {k: v for k, v in ev.config.training.items() if k in _LOSS_FIELDS}
    split, settings = ev.split("test", loss=loss, version=results.METRIC_VERSIONS["eval_loss"])
    ev.settings["eval_loss"] = dict(settings, fingerprint=results.fingerprint(settings))
    loss_fn = sharded_batch_fn(exp.mesh, per_example_loss, 1, 1)
    prepare = lambda images: to_model_space(images, centered=d.centered)
    passes = ev.per_example(loss_fn, split, ev.eval_key, prepare, desc="eval loss")
    losses = np.concatenate([loss for _, (loss,) in passes])
    ev.report["eval_loss"], ev.report["eval_loss_stderr"] = _mean_stderr(losses)
    ev.report["eval_loss_examples"] = len(losses)


def _ode_settings(ec) -> dict:
    """The likelihood solver's options: ``bits_per_dim`` keyword arguments."""
    return dict(
        exact_trace=bool(ec.get("exact_trace", False)),
        num_probes=int(ec.get("num_probes", 1)),
        noise=str(ec.get("probe_noise", "rademacher")),
        eps=float(ec.get("eps", 1e-5)),
        rtol=float(ec.get("rtol", 1e-5)),
        atol=float(ec.get("atol", 1e-5)),
        solver=str(ec.get("ode_solver", LIKELIHOOD_ODE.solver)),
    )


def _eval_bpd(ev: _ImageEval, split: str, split_i: int) -> None:
    """Bits/dim of one split, each pass saved after every batch in ``bpd_<split>-<fp>/repeat_<r>
    .npz``; pass ``r`` depends on the settings, ``split_i`` and ``r`` only, so is reusable."""
    exp, ec, d = ev.exp, ev.config.eval, ev.config.data
    ode = _ode_settings(ec)
    data, settings = ev.split(
        split,
        split_index=split_i,
        max_examples=ec.get("max_examples", None),
        likelihood=ode,
        dequantize=True,
        version=results.METRIC_VERSIONS["bpd"],
    )
    _, n, batch_size = data
    store = results.ResultDir(ev.out_dir, f"bpd_{split}", settings).open(write=ev.is_main)

    def per_example_bpd(params, key, x01):
        res = bits_per_dim(
            exp.sde, exp.score_fn(params), x01, key, centered=d.centered, dequantize=True, **ode
        )
        return res.bpd, jnp.broadcast_to(res.nfe, res.bpd.shape)

    bpd_fn = sharded_batch_fn(
        exp.mesh, per_example_bpd, 1, 2, compiler_options=xla_flags.solve_compiler_options()
    )
    num_repeats = int(ec.get("num_repeats", 1))
    n_batches = -(-n // batch_size)
    if ev.is_main:
        trace = "exact" if ode["exact_trace"] else f"Hutchinson ({ode['num_probes']} probe(s))"
        solver = f"{ode['solver']}, rtol {ode['rtol']:g}, atol {ode['atol']:g}, {trace} trace"
        log.info(
            f"Bits/dim on {split}: {n} example(s) in {n_batches} batch(es) of {batch_size}, "
            f"{num_repeats} pass(es); {solver} -> {store.path}"
        )
    unit_interval = lambda images: images.astype(np.float32) / 255.0
    per_repeat, nfe_all, reused = [], [], []
    for r in range(num_repeats):
        path = store.file(f"repeat_{r}.npz")
        done = dict(np.load(path)) if os.path.exists(path) else {}
        if done and bool(done["complete"]):
            reused.append(float(done["completed_at"]))
        else:
            bpds, nfes = list(done.get("bpd", [])), list(done.get("nfe", []))
            first = int(done.get("next_batch", 0))
            if first and ev.is_main:
                log.info(
                    "Resuming %s pass %d at batch %d of %d", split, r + 1, first + 1, n_batches
                )
            key_r = jax.random.fold_in(ev.eval_key, 1000 + 100 * split_i + r)
            desc = f"bpd {split} {r + 1}/{num_repeats}"
            for i, (bpd, nfe) in ev.per_example(bpd_fn, data, key_r, unit_interval, first, desc):
                bpds.extend(bpd.tolist())
                nfes.extend(nfe.tolist())
                last = i + 1 == n_batches
                if ev.is_main:
                    atomic_savez(
                        path,
                        bpd=np.array(bpds),
                        nfe=np.array(nfes),
                        next_batch=i + 1,
                        complete=last,
                        completed_at=time.time() if last else float("nan"),
                    )
            done = {"bpd": np.array(bpds), "nfe": np.array(nfes)}
        per_repeat.append(done["bpd"])
        nfe_all.append(done["nfe"])
    allb = np.concatenate(per_repeat)
    finite = np.isfinite(allb)
    rep = ev.report
    rep[f"bpd_{split}"], rep[f"bpd_{split}_stderr"] = _mean_stderr(allb[finite])
    rep[f"bpd_{split}_per_repeat"] = [float(np.nanmean(b)) for b in per_repeat]
    rep[f"bpd_{split}_examples"] = int(len(per_repeat[0]))
    rep[f"bpd_{split}_failed_solves"] = int((~finite).sum())
    rep["bpd_nfe_mean"] = float(np.mean(np.concatenate(nfe_all)))
    ev.record(f"bpd_{split}", store, reused, num_repeats, "passes", num_repeats=num_repeats)


def _sample_rounds(ev: _ImageEval, sample_metrics) -> None:
    """``eval.num_samples`` samples in rounds, ``samples-<fp>/samples_<r>.npz``; round ``r``
    depends on the settings and ``r`` only, so is reused, also by a larger ``num_samples``."""
    config, exp, ec, d = ev.config, ev.exp, ev.config.eval, ev.config.data
    num_samples = int(ec.num_samples)
    batch_size = ev.batch_size(num_samples)
    settings = {
        **ev.common,
        "sampler": results.sampler_settings(config),
        "batch_size": batch_size,
        "image": {"shape": list(exp.data_shape), "centered": bool(d.centered)},
        "version": results.METRIC_VERSIONS["samples"],
    }
    store = results.ResultDir(ev.out_dir, "samples", settings).open(write=ev.is_main)
    n_rounds = -(-num_samples // batch_size)
    sample_fn = experiment.sampler_from_config(config.sampling, exp.sde)
    run = sharded_sampler(exp.mesh, sample_fn, exp.score_fn, (batch_size, *exp.data_shape))
    paths = [store.file(f"samples_{r}.npz") for r in range(n_rounds)]
    todo = [r for r in range(n_rounds) if not os.path.exists(paths[r])]
    finished = [results.file_time(paths[r]) for r in range(n_rounds) if r not in todo]
    nfe = None
    if ev.is_main:
        done = f" ({len(finished)} round(s) already done with these settings)" if finished else ""
        log.info(
            f"Sampling {num_samples} image(s) with the {config.sampling.method} sampler in "
            f"{n_rounds} round(s) of {batch_size} -> {store.path}{done}"
        )
    for r in tqdm(todo, desc="sampling rounds", disable=not ev.is_main):
        x, nfe = run(ev.params, jax.random.fold_in(ev.eval_key, 10**6 + r))
        images = to_uint8(to_host(x), centered=d.centered)
        nfe = int(to_host(nfe))
        if ev.is_main:
            atomic_savez(paths[r], samples=images, nfe=np.int64(nfe))

    def read_all():
        left = num_samples
        for p in paths:
            with np.load(p) as f:
                images = f["samples"][:left]
            left -= len(images)
            yield images

    with np.load(paths[0]) as f:
        first = f["samples"][:64]
        if nfe is None and "nfe" in f.files:  # every round was on disk
            nfe = int(f["nfe"])
    png = plotting.save_image_grid(store.file("samples.png"), first) if ev.is_main else None
    ev.report.update(
        sampler=config.sampling.method,
        num_samples=num_samples,
        sample_dir=store.path,
        samples_png=png,
        sampling_nfe=nfe,
    )
    if sample_metrics is not None:
        if ev.is_main:
            log.info("Scoring %d sample(s) (sample-quality metrics)", num_samples)
        ev.report.update(sample_metrics(config, read_all))
    metrics_version = results.METRIC_VERSIONS["sample_metrics"]
    kw = dict(num_samples=num_samples, nfe=nfe, metrics_version=metrics_version)
    ev.record("sampling", store, finished, n_rounds, "rounds", **kw)


def _draw(run, params, key, n: int, config, is_main: bool) -> tuple[np.ndarray, int]:
    """``run(params, key) -> (x, nfe)`` on the host, timed in the log."""
    t0 = time.perf_counter()
    if is_main:
        log.info("Drawing %d sample(s) with the %s sampler", n, config.sampling.method)
    x, nfe = run(params, key)
    nfe = int(to_host(nfe))
    if is_main:
        log.info("  done in %.1f s (%d network evaluations)", time.perf_counter() - t0, nfe)
    return to_host(x), nfe


def _evaluate_toy(config, workdir: str) -> dict:
    exp, restored = restore_checkpoint(config, workdir)
    step, ec, name = restored.step, config.eval, config.data.dataset
    weights, params = _weights(config, restored.state)
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    train_data = make_toy_dataset(name, config.data.n_train, config.data.seed)
    test_data = make_toy_dataset(name, config.data.n_test, config.data.seed + 1)
    ode = _ode_settings(ec)

    @functools.partial(jax.jit, compiler_options=xla_flags.solve_compiler_options())
    def nll_batch(params, x, key):
        res = log_likelihood(exp.sde, exp.score_fn(params), x, key, **ode)
        return -res.logp, res.nfe

    bs = min(int(ec.batch_size), len(test_data))
    log.info(
        f"Test NLL of {len(test_data)} point(s) ({ode['solver']}, rtol {ode['rtol']:g}, "
        f"atol {ode['atol']:g})"
    )
    n_batches = -(-len(test_data) // bs)
    bar = tqdm(total=n_batches, desc="test NLL", unit="batch", leave=False)
    nfes = []

    def nll_rows(rows):  # keyed by the index of the batch's first point
        key = jax.random.fold_in(exp.eval_key, int(rows[0]))
        nll, nfe = nll_batch(params, jnp.asarray(test_data[rows]), key)
        nfes.append(int(nfe))
        bar.update(1)
        return (nll,)

    # The last batch is padded with copies of the last point, not zeros: the adaptive solver's
    # step sizes are shared by the whole batch.
    rows = np.minimum(np.arange(n_batches * bs), len(test_data) - 1)
    (nll,) = map_fixed_batches(nll_rows, rows, bs)
    nll = nll[: len(test_data)]
    bar.close()

    sample_fn = experiment.sampler_from_config(config.sampling, exp.sde)

    @jax.jit
    def sample(params, key):
        res = sample_fn(exp.score_fn(params), key, (ec.num_samples, 2))
        return res.x, res.nfe

    key = jax.random.fold_in(exp.eval_key, 10**6 + step)
    samples, sample_nfe = _draw(sample, params, key, ec.num_samples, config, True)
    is_main = jax.process_index() == 0
    base, report = _head(config, restored, weights)
    settings = {
        **base,
        "data": results.data_settings(config),
        "likelihood": ode,
        "batch_size": bs,
        "sampler": results.sampler_settings(config),
        "num_samples": int(ec.num_samples),
        "version": results.METRIC_VERSIONS["toy_eval"],
    }
    fp = results.fingerprint(settings)
    stem = os.path.join(out_dir, f"samples_step_{step}_{fp}")
    if is_main:
        plotting.scatter_samples(
            stem + ".png",
            data=test_data[: ec.num_samples],
            samples=samples,
            title=f"{name}: {config.training.sde}, step {step}, test NLL {nll.mean():.3f} nats",
        )
        np.savez(stem + ".npz", samples=samples)
    true_logp = toy_density(name, test_data)
    report |= {
        "test_nll_nats": float(nll.mean()),
        "test_nll_stderr": float(nll.std(ddof=1) / math.sqrt(len(nll))),
        "num_test": len(nll),
        "likelihood_nfe_mean": float(np.mean(nfes)),
        "gaussian_baseline_nll_nats": gaussian_nll(train_data, test_data),
        "true_nll_nats": None if true_logp is None else float(-np.mean(true_logp)),
        "sampler": config.sampling.method,
        "sampling_nfe": sample_nfe,
        "num_samples": int(samples.shape[0]),
        "samples_png": stem + ".png",
        "settings": settings,
        "fingerprint": fp,
        "reused": {"reused": False},
    }
    if name == "gmm":
        # The mixture is known: how often samples land in each component, against the weights.
        comp = np.asarray(TOY_GMM.responsibilities(samples)).argmax(-1)
        freq = np.bincount(comp, minlength=TOY_GMM.num_components) / len(comp)
        report["sample_component_freqs"] = [round(float(f), 4) for f in freq]
        report["true_component_weights"] = [float(w) for w in TOY_GMM.weights]
        report["max_component_weight_error"] = float(np.max(np.abs(freq - TOY_GMM.weights)))
    return _finish_report(report, workdir, step, is_main)


def sample(config, workdir: str) -> dict:
    """``--mode sample``: ``sampling.batch_size`` samples of the newest EMA parameters in
    ``workdir/samples/step_<step>/sample-<fp>/`` (``samples.{png,npz}``, ``settings.json``), the
    newest also in ``workdir/samples/sample_step_<step>.{png,npz}``."""
    exp, restored = restore_checkpoint(config, workdir)
    state, step = restored.state, restored.step
    run, n, key = draw.sample_batch(config, exp, step)
    is_main = jax.process_index() == 0
    x, nfe = _draw(run, state.ema_params, key, n, config, is_main)
    out = {"step": step, "num_samples": n, "nfe": nfe}
    if not is_main:
        return out
    out_dir = os.path.join(workdir, "samples")
    settings = {
        **_head(config, restored, "ema")[0],
        "sampler": results.sampler_settings(config),
        "num_samples": n,
        "num_devices": device_count(exp.mesh),  # the key of each device's share of the samples
    }
    store = results.ResultDir(os.path.join(out_dir, f"step_{step}"), "sample", settings).open()
    if exp.is_image:
        x = to_uint8(x, centered=config.data.centered)
        plotting.save_image_grid(store.file("samples.png"), x)
    else:
        data = make_toy_dataset(config.data.dataset, n, config.data.seed + 1)
        title = f"{config.data.dataset}: {config.sampling.method} sampler, step {step}"
        plotting.scatter_samples(store.file("samples.png"), data=data, samples=x, title=title)
    atomic_savez(store.file("samples.npz"), samples=x)
    stem = os.path.join(out_dir, f"sample_step_{step}")
    for ext in ("png", "npz"):  # the newest, at the path earlier versions wrote
        shutil.copyfile(store.file(f"samples.{ext}"), f"{stem}.{ext}.tmp")
        os.replace(f"{stem}.{ext}.tmp", f"{stem}.{ext}")
    log.info("Samples written to %s (newest for this step: %s.png)", store.path, stem)
    return out | {
        "png": stem + ".png",
        "npz": stem + ".npz",
        "sample_dir": store.path,
        "fingerprint": store.fingerprint,
        "settings": store.settings,
    }


def reference_stats(config, workdir: str) -> dict:
    """``--mode stats``: FID/KID reference statistics of ``eval.stats_split`` (default "train", as
    the paper's CIFAR-10 ones) in ``workdir/stats/<dataset>_<split>_{inception,<classifier>}.npz``
    (Inception: mu, sigma and up to ``eval.kid_features`` pool_3 features)."""
    ec, d = config.eval, config.data
    split = ec.get("stats_split", "train")
    source = experiment.image_source_from_config(d, split)
    max_examples = ec.get("max_examples", None)
    batch = ec.get("inception_batch_size", 200)
    kw = dict(global_batch_size=batch, max_examples=max_examples)
    n_batches = num_eval_batches(source, **kw)

    def make_batches():
        for images, _, mask in tqdm(eval_batches(source, **kw), total=n_batches, desc=split):
            yield images[mask]

    out_dir = os.path.join(workdir, "stats")
    os.makedirs(out_dir, exist_ok=True)
    stem = f"{str(d.dataset).lower()}_{split}"
    common = {
        "data": results.data_settings(config),
        "split": split,
        "max_examples": max_examples,
        "version": results.METRIC_VERSIONS["reference_stats"],
    }
    written = {}
    explicit = ec.get("inception_weights", None)
    try:
        weights = find_inception_weights(explicit)
    except FileNotFoundError as e:
        if explicit:
            raise
        weights = None
        log.warning("No Inception statistics: %s", str(e).splitlines()[0])
    if weights is not None:
        keep = int(ec.get("kid_features", 10_000))

        def compute(path, meta):
            features = InceptionFeatures(str(weights), batch_size=batch)
            stats, _ = inception_statistics(make_batches(), features, keep_features=keep)
            save_reference_stats(path, stats, dataset=str(d.dataset), split=split, **meta)

        size = [os.path.basename(weights), os.path.getsize(weights)]
        settings = dict(common, inception_weights=size, kid_features=keep)
        written.update(_keyed_stats(out_dir, stem, "inception", settings, compute))
        written["num_examples"] = min(len(source), max_examples or len(source))
    name = classifier_for_dataset(str(d.dataset), d.image_size, d.num_channels)
    if name is not None:
        clf = load_classifier(name)

        def compute_fd(path, meta):
            save_classifier_stats(path, clf, make_batches(), dataset=str(d.dataset), **meta)

        settings = dict(common, classifier=name, classifier_sha256=clf.fingerprint)
        out = _keyed_stats(out_dir, stem, name, settings, compute_fd)
        written.update({f"classifier_{k}": v for k, v in out.items()})
    if not written:
        raise MissingDataError(
            "Nothing to compute: no Inception weights were found (see the README, 'Sample "
            "quality') and the dataset has no project classifier."
        )
    return written
