"""The training loop: config -> data -> sharded state -> jitted steps -> checkpoints and logs.

One process per host (``jax.distributed``); every process runs this same loop on its own shard of
each global batch. Process 0 alone writes logs and pictures; all processes take part in
checkpointing.
"""

from __future__ import annotations

import logging
import math
import os
import time

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

__all__ = [
    "train",
    "jitted_train_step",
    "NonFiniteLossError",
]

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or Inf."""


def _toy_batches(train_data: np.ndarray, batch_size: int, n_steps: int, seed: int, step: int):
    # Indices depend only on (seed, step), so a resumed run sees exactly the same batches.
    rng = np.random.default_rng([seed, step])
    idx = rng.integers(0, train_data.shape[0], size=(n_steps, batch_size))
    return train_data[idx]


class _Feed:
    """Training and held-out batches as global arrays, each a pure function of the step."""

    def __init__(self, config, exp: Experiment, start_step: int):
        self.config, self.exp = config, exp
        tc = config.training
        self.n_jit = tc.n_jitted_steps
        self.batch_size = tc.batch_size
        n_dev = device_count(exp.mesh)
        if self.batch_size % n_dev:
            raise ValueError(
                f"training.batch_size={self.batch_size} is not divisible by the {n_dev} devices; "
                f"use a multiple of {n_dev} (or set num_devices)."
            )
        self._iterator = None
        if not exp.is_image:
            d = config.data
            self.train_data = make_toy_dataset(d.dataset, d.n_train, d.seed)
            self.eval_data = make_toy_dataset(d.dataset, d.get("n_test", 5_000), d.seed + 1)
            return

        d = config.data
        self.pcount, self.pindex = jax.process_count(), jax.process_index()
        self.train_source = experiment.image_source_from_config(d, "train")
        self.eval_source = experiment.image_source_from_config(d, "test")
        self.prep = dict(
            random_flip=d.random_flip,
            centered=d.centered,
            uniform_dequantization=d.uniform_dequantization,
            process_index=self.pindex,
            process_count=self.pcount,
        )
        self._iterator = TrainIterator(
            self.train_source,
            start_step=start_step,
            steps_per_call=self.n_jit,
            global_batch_size=self.batch_size,
            seed=config.seed,
            **self.prep,
        )
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
        local = train_batch(
            self.eval_source,
            step,
            global_batch_size=self.batch_size,
            seed=self.config.seed + 1,
            **prep,
        )
        return to_global_array(local, self.exp.mesh)

    def reference_data(self, n: int) -> np.ndarray:
        """Data to show beside toy samples."""
        return self.train_data[:n]

    def close(self) -> None:
        if self._iterator is not None:
            self._iterator.close()


def jitted_train_step(exp: Experiment):
    """The compiled ``step(state, batches) -> (state, metrics)`` of ``--mode train``.

    State replicated and donated, batches ``[n_jitted_steps, batch, ...]`` sharded on their
    batch axis, metrics replicated: the output state has the input's shardings, so the step is
    traced and compiled once.
    """
    tc = exp.config.training
    step_fn = make_train_step(
        model=exp.model,
        loss_fn=exp.loss_fn,
        optimizer=exp.optimizer,
        ema_rate=exp.config.model.ema_rate,
        seed_key=exp.train_key,
        unroll=tc.get("scan_unroll", 1),
    )
    return jax.jit(
        step_fn,
        in_shardings=(exp.state_sharding, exp.batch_sharding(1)),
        out_shardings=(exp.state_sharding, replicated(exp.mesh)),
        donate_argnums=0,
    )


def train(config, workdir: str):
    """Trains the model described by ``config``; checkpoints and logs go to ``workdir``.

    Resumes automatically from the newest checkpoint in ``workdir/checkpoints`` that restores
    and verifies. Writes TensorBoard events to ``workdir/tensorboard``, scalars to
    ``workdir/metrics.jsonl`` and sample pictures to ``workdir/samples``. Holds the lock
    ``workdir/train.lock`` while it runs, so a second training of the same directory stops at
    once.

    Returns:
      The final training state.

    Raises:
      StoppedBySignal: SIGTERM/SIGINT (or a multi-host preemption notice) arrived; the state was
        checkpointed first, and running again resumes from it.
      NonFiniteLossError: the loss became NaN or infinite; no checkpoint of that state is
        written.
    """
    check_workdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock.hold(workdir, "train", mode="train") as lock:
        return _train(config, workdir, lock)


def _train(config, workdir: str, lock):
    exp = build_experiment(config)
    tc = config.training
    check_frequencies(tc)
    n_jit = tc.n_jitted_steps
    preempt_freq = tc.get("snapshot_freq_for_preemption", tc.snapshot_freq)
    eval_freq = tc.get("eval_freq", 0) or 0
    lr_schedule = learning_rate_schedule(config.optim.lr, config.optim.warmup)
    is_main = jax.process_index() == 0

    ckpt = Checkpointer(
        workdir,
        keep_recent=2,
        snapshot_freq=tc.snapshot_freq,
        max_snapshots=tc.get("max_to_keep", None),
    )
    resumed = None
    if ckpt.latest_step() is not None:
        resumed = ckpt.restore_verified(exp.abstract_target())
        exp.check_restored(resumed)
        state = resumed.state
        log.info("Resumed from step %d (%s)", resumed.step, resumed.path)
    else:
        state = exp.init_state()
    start = int(jax.device_get(state.step))
    if start % n_jit:
        raise ConfigError(
            f"The checkpoint is at step {start}, not a multiple of "
            f"training.n_jitted_steps={n_jit}; "
            "resume with an n_jitted_steps that divides it."
        )

    p_step = jitted_train_step(exp)
    eval_loss = jax.jit(
        make_eval_loss(model=exp.model, loss_fn=exp.loss_fn, seed_key=exp.eval_key),
        in_shardings=(exp.state_sharding, exp.batch_sharding(0)),
        out_shardings=replicated(exp.mesh),
    )
    n_dev = device_count(exp.mesh)
    n_snap = _snapshot_count(config, exp)
    snapshot = None
    if tc.get("snapshot_sampling", True):
        sample_fn = experiment.sampler_from_config(config.sampling, exp.sde)
        snapshot = sharded_sampler(exp.mesh, sample_fn, exp.score_fn, (n_snap, *exp.data_shape))

    feed = _Feed(config, exp, start)
    writer = MetricWriter(
        os.path.join(workdir, "tensorboard"),
        jsonl_path=os.path.join(workdir, "metrics.jsonl"),
        enabled=is_main,
    )
    show_bar = is_main and tc.get("progress_bar", True)
    if is_main and start < tc.n_iters:
        log.info(
            "Training steps %d-%d; compiling the training step first (%s, %s)",
            start,
            tc.n_iters,
            config.model.get("name", "model"),
            f"batch {tc.batch_size} on {n_dev} device(s)",
        )
    bar = tqdm(
        total=tc.n_iters,
        initial=start,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not show_bar,
    )
    t_last, s_last = time.perf_counter(), start
    step = start
    saved_this_run: list[int] = []
    with StopSignal() as stop:
        try:
            while step < tc.n_iters:
                if lock is not None:
                    lock.check()
                batches = feed.train_batches(step)
                new_state, metrics = p_step(state, batches)
                metrics = jax.device_get(metrics)
                if not metrics["all_finite"] or not math.isfinite(metrics["loss"]):
                    ckpt.wait()
                    raise NonFiniteLossError(
                        _non_finite_message(
                            metrics["loss"], step, n_jit, ckpt, resumed, saved_this_run
                        )
                    )
                state = new_state
                step += n_jit
                bar.update(n_jit)
                final = step >= tc.n_iters
                if step % tc.log_freq == 0 or final:
                    now = time.perf_counter()
                    rate = (step - s_last) / max(now - t_last, 1e-9)
                    t_last, s_last = now, step
                    scalars = {
                        "loss": metrics["loss"],
                        "grad_norm": metrics["grad_norm"],
                        "learning_rate": lr_schedule(step),
                        "steps_per_s": rate,
                        "examples_per_s": rate * tc.batch_size,
                    }
                    writer.write_scalars(step, scalars)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", steps_per_s=f"{rate:.3g}")
                    if not show_bar and is_main:
                        left = (tc.n_iters - step) / max(rate, 1e-9)
                        log.info(
                            "step %d/%d loss %.5f %.3g steps/s ETA %.0f s",
                            step,
                            tc.n_iters,
                            metrics["loss"],
                            rate,
                            left,
                        )
                if eval_freq and (step % eval_freq == 0):
                    ev = float(jax.device_get(eval_loss(state, feed.eval_batch(step))))
                    writer.write_scalars(step, {"eval_loss": ev})
                preempted = stop.received or ckpt.reached_preemption(step)
                if step % tc.snapshot_freq == 0 or step % preempt_freq == 0 or final or preempted:
                    ckpt.save(state, meta=exp.checkpoint_meta())
                    saved_this_run.append(step)
                if preempted:
                    ckpt.wait()
                    raise StoppedBySignal(
                        f"Stopped by {stop.received or 'a preemption notice'} at step {step} of "
                        f"{tc.n_iters}; checkpoint saved in {ckpt.directory}. Resume with the "
                        "same command.",
                        signal_name=stop.received or "preemption",
                        step=step,
                    )
                if snapshot is not None and (step % tc.snapshot_freq == 0 or final):
                    bar.clear()
                    _write_snapshot(config, exp, feed, snapshot, state, step, workdir, writer)
                    bar.refresh()
        finally:
            bar.close()
            feed.close()
            writer.close()
            ckpt.close()
    return state


def _non_finite_message(loss, step, n_jit, ckpt, resumed, saved_this_run) -> str:
    """What to say when the loss becomes NaN/Inf: which checkpoint is kept and how far it is to
    be trusted."""
    where = f"Training loss became {loss} between steps {step} and {step + n_jit}."
    if saved_this_run:
        last = saved_this_run[-1]
        kept = (
            f" The last good checkpoint (step {last}), saved by this run at a finite loss, is "
            f"kept in {ckpt.directory}; nothing after it was saved."
        )
        advice = " Lower optim.lr, check the data scaling, or enable optim.grad_clip."
    elif resumed is not None:
        kept = (
            f" This run resumed from checkpoint step {resumed.step} ({resumed.path}, "
            f"{'digests verified' if resumed.verified else 'written without digests'}) and "
            "diverged before saving anything: that checkpoint is kept as it was, but it may "
            "itself lead to the NaN."
        )
        advice = (
            " Try an older checkpoint (move the newer step directories aside), lower optim.lr, "
            "check the data scaling, or enable optim.grad_clip."
        )
    else:
        kept = " No checkpoint was written (the run started from scratch)."
        advice = " Lower optim.lr, check the data scaling, or enable optim.grad_clip."
    return where + kept + advice


def _snapshot_count(config, exp) -> int:
    """Samples in a training snapshot: ``snapshot_samples`` rounded up to the device count."""
    n_dev = device_count(exp.mesh)
    return -(-config.training.snapshot_samples // n_dev) * n_dev


def _write_snapshot(config, exp, feed, snapshot, state, step, workdir, writer) -> None:
    key = jax.random.fold_in(exp.eval_key, step)
    t0 = time.perf_counter()
    if jax.process_index() == 0:
        log.info(
            "Step %d: drawing %d samples for the snapshot picture (%s sampler)",
            step,
            _snapshot_count(config, exp),
            config.sampling.method,
        )
    samples, nfe = snapshot(state.ema_params, key)
    samples = to_host(samples)
    if jax.process_index() == 0:
        log.info(
            "  done in %.1f s (%d network evaluations)", time.perf_counter() - t0, int(to_host(nfe))
        )
    if jax.process_index() != 0:
        return
    out = os.path.join(workdir, "samples")
    os.makedirs(out, exist_ok=True)
    if exp.is_image:
        images = plotting.to_uint8(samples, centered=config.data.centered)
        grid = plotting.image_grid(images)
        plotting.save_image_grid(os.path.join(out, f"step_{step}.png"), images)
        writer.write_images(step, {"samples": grid})
    else:
        plotting.scatter_samples(
            os.path.join(out, f"step_{step}.png"),
            data=feed.reference_data(len(samples)),
            samples=samples,
            title=f"{config.data.dataset}, step {step}",
        )
