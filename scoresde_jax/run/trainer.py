"""The one training loop (:func:`fit`, given a :class:`Job` by every trained network) and the
score model's training (:func:`train`). Exact resume: random streams fold in the step. In a
multi-host job process 0 alone writes logs and pictures; all processes checkpoint."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from scoresde_jax.core.mesh import (
    device_count,
    put_global_batch,
    replicated,
    sharded_sampler,
    to_global_array,
)
from scoresde_jax.data import TrainIterator, make_toy_dataset, train_batch
from scoresde_jax.errors import ConfigError, StoppedBySignal
from scoresde_jax.io import images as plotting
from scoresde_jax.run import experiment, workdir_lock
from scoresde_jax.run.checkpoint import Checkpointer
from scoresde_jax.run.experiment import Experiment, build_experiment, check_workdir, to_host
from scoresde_jax.run.preflight import check_frequencies
from scoresde_jax.run.signals import StopSignal
from scoresde_jax.run.state import learning_rate_schedule
from scoresde_jax.run.train_step import make_eval_loss, make_train_step
from scoresde_jax.run.writers import MetricWriter

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or Inf."""


@dataclasses.dataclass
class Job:
    """What one training run gives :func:`fit`: ``step`` advances ``steps_per_call`` steps, its
    ``loss`` (optionally ``all_finite``) averaged per logging window; ``evaluate`` runs every
    ``eval_freq`` steps, ``snapshot`` every ``snapshot_freq`` and at the end. Checkpoints at
    ``snapshot_freq`` (kept), ``preempt_freq`` (two newest kept), the end and a stop signal."""

    name: str
    n_iters: int
    init_state: Callable[[], Any]
    abstract_target: Callable[[], Any]
    step: Callable[[Any, int], tuple[Any, dict]]
    steps_per_call: int = 1
    log_freq: int = 100
    snapshot_freq: int = 0
    preempt_freq: int = 0
    max_snapshots: int | None = None
    eval_freq: int = 0
    evaluate: Callable[[Any, int], dict] | None = None
    eval_at_end: bool = False
    snapshot: Callable[[Any, int, MetricWriter], None] | None = None
    scalars: Callable[[int], dict] | None = None
    checkpoint_meta: Callable[[], dict] | None = None
    check_restored: Callable[[Any], None] | None = None
    batch_size: int | None = None
    progress: bool = True
    description: str = ""
    advice: str = "lower optim.lr, check the data scaling, or enable optim.grad_clip."


@dataclasses.dataclass
class Fitted:
    """What :func:`fit` returns: the final state, the steps run and the last logged values."""

    state: Any
    start: int
    step: int
    seconds: float = 0.0
    scalars: dict = dataclasses.field(default_factory=dict)
    checkpoint_dir: str | None = None


def _due(step: int, freq: int) -> bool:
    return bool(freq) and step % freq == 0


def fit(job: Job, workdir: str | None, *, lock=None) -> Fitted:
    """Runs ``job`` to ``job.n_iters`` steps, resuming from the newest readable checkpoint of
    ``workdir`` (``None``: in memory). Raises StoppedBySignal (after saving) or NonFiniteLossError
    (nothing of that state saved)."""
    is_main = jax.process_index() == 0
    ckpt = resumed = None
    if workdir is not None:
        ckpt = Checkpointer(
            workdir, snapshot_freq=job.snapshot_freq or None, max_snapshots=job.max_snapshots
        )
    if ckpt is not None and ckpt.latest_step() is not None:
        resumed = ckpt.restore_verified(job.abstract_target())
        if job.check_restored is not None:
            job.check_restored(resumed)
        state = resumed.state
        log.info("Resumed from step %d (%s)", resumed.step, resumed.path)
    else:
        state = job.init_state()
    start = step = int(jax.device_get(state.step))
    writer = MetricWriter(
        os.path.join(workdir or "", "tensorboard"),
        jsonl_path=os.path.join(workdir, "metrics.jsonl") if workdir else None,
        enabled=is_main and workdir is not None,
    )
    show_bar = is_main and job.progress
    if is_main and start < job.n_iters:
        about = f" ({job.description})" if job.description else ""
        log.info("%s: steps %d-%d; compiling the step first%s", job.name, start, job.n_iters, about)
    bar = tqdm(
        total=job.n_iters,
        initial=start,
        desc=job.name,
        unit="step",
        dynamic_ncols=True,
        disable=not show_bar,
    )
    out = Fitted(state, start, step, checkpoint_dir=ckpt.directory if ckpt else None)
    t0 = t_last = time.perf_counter()
    s_last, window, saved = start, [], []
    with StopSignal() as stop:
        try:
            while step < job.n_iters:
                if lock is not None:
                    lock.check()
                new_state, metrics = job.step(state, step)
                metrics = jax.device_get(metrics)
                if not metrics.get("all_finite", True) or not math.isfinite(metrics["loss"]):
                    raise NonFiniteLossError(
                        _non_finite_message(job, metrics["loss"], step, ckpt, resumed, saved)
                    )
                state = new_state
                window.append(metrics)
                step += job.steps_per_call
                bar.update(job.steps_per_call)
                final = step >= job.n_iters
                if _due(step, job.log_freq) or final:
                    now = time.perf_counter()
                    rate = (step - s_last) / max(now - t_last, 1e-9)
                    t_last, s_last = now, step
                    keys = [k for k in window[0] if k != "all_finite"]
                    out.scalars = {k: float(np.mean([m[k] for m in window])) for k in keys}
                    window = []
                    _log_window(job, step, rate, out.scalars, writer, bar, is_main and not show_bar)
                if job.evaluate and (_due(step, job.eval_freq) or (final and job.eval_at_end)):
                    writer.write_scalars(step, job.evaluate(state, step))
                preempted = stop.received or (ckpt is not None and ckpt.reached_preemption(step))
                checkpoint = _due(step, job.snapshot_freq) or _due(step, job.preempt_freq)
                if ckpt is not None and (checkpoint or final or preempted):
                    ckpt.save(state, meta=job.checkpoint_meta() if job.checkpoint_meta else None)
                    saved.append(step)
                if preempted:  # ckpt.close() below waits for the save
                    where = f"checkpoint saved in {ckpt.directory}" if ckpt else "nothing saved"
                    raise StoppedBySignal(
                        f"Stopped by {stop.received or 'a preemption notice'} at step {step} of "
                        f"{job.n_iters} ({job.name}); {where}. Resume with the same command.",
                        signal_name=stop.received or "preemption",
                        step=step,
                    )
                if job.snapshot is not None and (_due(step, job.snapshot_freq) or final):
                    bar.clear()
                    job.snapshot(state, step, writer)
                    bar.refresh()
        finally:
            bar.close()
            writer.close()
            if ckpt is not None:
                ckpt.close()
    out.state, out.step, out.seconds = state, step, time.perf_counter() - t0
    return out


def _log_window(job: Job, step, rate, means: dict, writer, bar, log_line: bool) -> None:
    """Writes the means of one logging window; a log line stands in for a hidden bar."""
    scalars = means | (job.scalars(step) if job.scalars else {}) | {"steps_per_s": rate}
    if job.batch_size:
        scalars["examples_per_s"] = rate * job.batch_size
    writer.write_scalars(step, scalars)
    bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()})
    if log_line:
        head = f"{job.name} step {step}/{job.n_iters}"
        values = " ".join(f"{k} {v:.5g}" for k, v in means.items())
        left = (job.n_iters - step) / max(rate, 1e-9)
        log.info("%s %s %.3g steps/s ETA %.0f s", head, values, rate, left)


def _non_finite_message(job: Job, loss, step, ckpt, resumed, saved) -> str:
    """Which checkpoint is kept after a NaN/Inf loss, and how far it is to be trusted."""
    where = f"Training loss became {loss} between steps {step} and {step + job.steps_per_call}."
    advice = " " + job.advice[0].upper() + job.advice[1:]
    if saved:
        kept = (
            f" The last good checkpoint (step {saved[-1]}), saved by this run at a finite loss, "
            f"is kept in {ckpt.directory}; nothing after it was saved."
        )
    elif resumed is not None:
        kept = (
            f" This run resumed from checkpoint step {resumed.step} ({resumed.path}, "
            f"{'digests verified' if resumed.verified else 'written without digests'}) and "
            "diverged before saving anything: that checkpoint is kept as it was, but it may "
            "itself lead to the NaN."
        )
        advice = " Try an older checkpoint (move the newer step directories aside), " + job.advice
    else:
        kept = " No checkpoint was written (the run started from scratch)."
    return where + kept + advice


def _toy_batches(train_data: np.ndarray, batch_size: int, n_steps: int, seed: int, step: int):
    # Indices depend only on (seed, step), so a resumed run sees exactly the same batches.
    rng = np.random.default_rng([seed, step])
    return train_data[rng.integers(0, train_data.shape[0], size=(n_steps, batch_size))]


def input_workers(data_config) -> int:
    """``config.data.num_workers``, else one input thread per two usable CPU cores (1 to 4): the
    other half is left to the training step's own host threads (BENCHMARKS.md, Input pipeline)."""
    workers = data_config.get("num_workers")
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(4, (cores or 1) // 2))
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"config.data.num_workers={workers!r} must be a positive int (or None)")
    return workers


def train_batch_options(config, global_batch_size: int | None = None) -> dict:
    """The options of this process's training batches but the seed (see ``train_batch``), of
    ``global_batch_size`` images (default ``config.training.batch_size``)."""
    d = config.data
    return dict(
        global_batch_size=(
            config.training.batch_size if global_batch_size is None else global_batch_size
        ),
        random_flip=d.random_flip,
        centered=d.centered,
        uniform_dequantization=d.uniform_dequantization,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def train_iterator(config, start_step: int) -> TrainIterator:
    """The training batches of an image ``config`` from ``start_step`` on, as ``--mode train``
    reads them (``n_jitted_steps`` batches per item)."""
    return TrainIterator(
        experiment.image_source_from_config(config.data, "train"),
        start_step=start_step,
        steps_per_call=config.training.n_jitted_steps,
        workers=input_workers(config.data),
        seed=config.seed,
        **train_batch_options(config),
    )


class _Feed:
    """Training and held-out batches as global arrays, each a pure function of the step."""

    def __init__(self, config, exp: Experiment, start_step: int):
        self.config, self.exp = config, exp
        self.n_jit, self.batch_size = config.training.n_jitted_steps, config.training.batch_size
        n_dev = device_count(exp.mesh)
        if self.batch_size % n_dev:
            raise ValueError(
                f"training.batch_size={self.batch_size} is not divisible by the {n_dev} devices; "
                f"use a multiple of {n_dev} (or set num_devices)."
            )
        d = config.data
        self._iterator = None
        if not exp.is_image:
            self.train_data = make_toy_dataset(d.dataset, d.n_train, d.seed)
            self.eval_data = make_toy_dataset(d.dataset, d.get("n_test", 5_000), d.seed + 1)
            return
        self.eval_source = experiment.image_source_from_config(d, "test")
        self.prep = train_batch_options(config)
        self._iterator = train_iterator(config, start_step)
        self._next = iter(self._iterator)

    def train_batches(self, step: int) -> jax.Array:
        """``[n_jitted_steps, batch, ...]`` for the call starting at ``step``."""
        if not self.exp.is_image:
            x = _toy_batches(self.train_data, self.batch_size, self.n_jit, self.config.seed, step)
            return put_global_batch(x, self.exp.mesh, batch_axis=1)
        got, local = next(self._next)
        if got != step:
            raise RuntimeError(f"input pipeline out of step: expected {step}, got {got}")
        return to_global_array(local, self.exp.mesh, batch_axis=1)

    def eval_batch(self, step: int) -> jax.Array:
        """A held-out batch for the periodic eval loss (drawn afresh for every ``step``)."""
        if not self.exp.is_image:
            rng = np.random.default_rng([self.config.seed, step, 7])
            idx = rng.integers(0, len(self.eval_data), size=self.batch_size)
            return put_global_batch(self.eval_data[idx], self.exp.mesh)
        prep = dict(self.prep, random_flip=False)
        local = train_batch(self.eval_source, step, seed=self.config.seed + 1, **prep)
        return to_global_array(local, self.exp.mesh)

    def close(self) -> None:
        if self._iterator is not None:
            self._iterator.close()


def jitted_train_step(exp: Experiment):
    """The compiled train step: state replicated and donated, batches ``[n_jitted_steps, batch,
    ...]`` sharded on axis 1; the output has the input's shardings, so it compiles once."""
    step_fn = make_train_step(
        model=exp.model,
        loss_fn=exp.loss_fn,
        optimizer=exp.optimizer,
        ema_rate=exp.config.model.ema_rate,
        seed_key=exp.train_key,
        unroll=exp.config.training.get("scan_unroll", 1),
    )
    return jax.jit(
        step_fn,
        in_shardings=(exp.state_sharding, exp.batch_sharding(1)),
        out_shardings=(exp.state_sharding, replicated(exp.mesh)),
        donate_argnums=0,
    )


def train(config, workdir: str):
    """Trains (or resumes) the score model of ``config`` in ``workdir`` holding its train.lock;
    returns the final state."""
    check_workdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock.hold(workdir, "train", mode="train") as lock:
        return _train(config, workdir, lock)


def _train(config, workdir: str, lock):
    exp = build_experiment(config)
    tc = config.training
    check_frequencies(tc)
    n_jit = tc.n_jitted_steps
    p_step = jitted_train_step(exp)
    eval_loss = jax.jit(
        make_eval_loss(model=exp.model, loss_fn=exp.loss_fn, seed_key=exp.eval_key),
        in_shardings=(exp.state_sharding, exp.batch_sharding(0)),
        out_shardings=replicated(exp.mesh),
    )
    lr_schedule = learning_rate_schedule(config.optim.lr, config.optim.warmup)
    feeds: list[_Feed] = []  # made at the first step, where the restored state starts

    def step(state, step: int):
        if not feeds:
            feeds.append(_Feed(config, exp, step))
        return p_step(state, feeds[0].train_batches(step))

    def check_restored(resumed):
        exp.check_restored(resumed)
        if resumed.step % n_jit:
            raise ConfigError(
                f"The checkpoint is at step {resumed.step}, not a multiple of "
                f"training.n_jitted_steps={n_jit}; resume with an n_jitted_steps that divides it."
            )

    snapshot = None
    if tc.get("snapshot_sampling", True):
        sample_fn = experiment.sampler_from_config(config.sampling, exp.sde)
        n_dev = device_count(exp.mesh)
        shape = (-(-tc.snapshot_samples // n_dev) * n_dev, *exp.data_shape)  # rounded up
        run = sharded_sampler(exp.mesh, sample_fn, exp.score_fn, shape)

        def snapshot(state, step, writer):
            _write_snapshot(config, exp, feeds[0], run, shape[0], state, step, workdir, writer)

    job = Job(
        name="train",
        n_iters=tc.n_iters,
        init_state=exp.init_state,
        abstract_target=exp.abstract_target,
        step=step,
        steps_per_call=n_jit,
        log_freq=tc.log_freq,
        snapshot_freq=tc.snapshot_freq,
        preempt_freq=tc.get("snapshot_freq_for_preemption", tc.snapshot_freq),
        max_snapshots=tc.get("max_to_keep", None),
        eval_freq=tc.get("eval_freq", 0) or 0,
        evaluate=lambda state, step: {
            "eval_loss": float(jax.device_get(eval_loss(state, feeds[0].eval_batch(step))))
        },
        snapshot=snapshot,
        scalars=lambda step: {"learning_rate": float(lr_schedule(step))},
        checkpoint_meta=exp.checkpoint_meta,
        check_restored=check_restored,
        batch_size=tc.batch_size,
        progress=tc.get("progress_bar", True),
        description=f"{config.model.get('name', 'model')}, batch {tc.batch_size} on "
        f"{device_count(exp.mesh)} device(s)",
    )
    try:
        return fit(job, workdir, lock=lock).state
    finally:
        if feeds:
            feeds[0].close()


def _write_snapshot(config, exp, feed, run, n, state, step, workdir, writer) -> None:
    """Draws ``n`` samples of the EMA network; process 0 writes ``samples/step_<step>.png``."""
    is_main = jax.process_index() == 0
    if is_main:
        what = "Step %d: drawing %d samples for the snapshot picture (%s sampler)"
        log.info(what, step, n, config.sampling.method)
    t0 = time.perf_counter()
    samples, nfe = run(state.ema_params, jax.random.fold_in(exp.eval_key, step))
    samples, nfe = to_host(samples), int(to_host(nfe))
    if not is_main:
        return
    log.info("  done in %.1f s (%d network evaluations)", time.perf_counter() - t0, nfe)
    path = os.path.join(workdir, "samples", f"step_{step}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if exp.is_image:
        images = plotting.to_uint8(samples, centered=config.data.centered)
        plotting.save_image_grid(path, images)
        writer.write_images(step, {"samples": plotting.image_grid(images)})
    else:
        plotting.scatter_samples(
            path,
            data=feed.train_data[: len(samples)],
            samples=samples,
            title=f"{config.data.dataset}, step {step}",
        )
