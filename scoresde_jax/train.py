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
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from scoresde_jax import builders, plotting, workdir_lock
from scoresde_jax.checkpoint import Checkpointer
from scoresde_jax.data import make_toy_dataset
from scoresde_jax.errors import ConfigError, StoppedBySignal
from scoresde_jax.parallel import device_count, sharded_sampler
from scoresde_jax.preflight import check_frequencies
from scoresde_jax.score import get_score_fn
from scoresde_jax.sharding import make_data_mesh, put_global_batch, replicated
from scoresde_jax.signals import StopSignal
from scoresde_jax.state import init_state, learning_rate_schedule
from scoresde_jax.train_step import make_eval_loss, make_train_step
from scoresde_jax.writers import MetricWriter

__all__ = [
    "train",
    "Experiment",
    "build_experiment",
    "jitted_train_step",
    "NonFiniteLossError",
    "to_host",
]

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or Inf."""


class ReplicatedState:
    """A ``TrainState`` of ``self.model`` and ``self.optimizer`` over ``self.mesh``, created
    directly with replicated shardings; subclasses set ``model``, ``optimizer``, ``mesh``,
    ``data_shape`` and ``init_key``, then call :meth:`_setup_state`.

    The abstract state (``jax.eval_shape`` of the init) gives the shardings and is also the
    Orbax restore target.
    """

    def _setup_state(self) -> None:
        def init(key):
            x = jnp.zeros((1, *self.data_shape), jnp.float32)
            params = self.model.init(key, x, jnp.ones((1,), jnp.float32))
            return init_state(params, self.optimizer)

        self._init = init
        self.abstract_state = jax.eval_shape(init, self.init_key)
        self.state_sharding = jax.tree.map(lambda _: replicated(self.mesh), self.abstract_state)

    def init_state(self):
        """Parameters created directly with their (replicated) shardings."""
        return jax.jit(self._init, out_shardings=self.state_sharding)(self.init_key)

    def abstract_target(self):
        """Shapes, dtypes and shardings of the state: the restore target."""
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self.abstract_state,
            self.state_sharding,
        )


class Experiment(ReplicatedState):
    """Everything built from a config: SDE, network, optimizer, loss, mesh, abstract state."""

    def __init__(self, config):
        self.config = config
        self.sde = builders.sde_from_config(config)
        self.model = builders.model_from_config(config)
        self.optimizer = builders.optimizer_from_config(config.optim)
        self.loss_fn = builders.loss_from_config(config, self.sde)
        self.mesh = make_data_mesh(config.get("num_devices", None))
        self.data_shape = data_shape(config)
        self.continuous = config.training.continuous
        key = jax.random.PRNGKey(config.seed)
        self.init_key, self.train_key, self.eval_key = jax.random.split(key, 3)
        self._setup_state()

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 3

    def score_fn(self, params):
        model_fn = lambda x, labels: self.model.apply(params, x, labels, train=False)
        return get_score_fn(self.sde, model_fn, continuous=self.continuous)

    def batch_sharding(self, batch_axis: int = 0) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(*([None] * batch_axis), "data"))

    def checkpoint_meta(self) -> dict:
        """What a checkpoint records beside the state: the network's own noise levels, when
        ``config.model.noise_levels`` gives them (a converted checkpoint's)."""
        levels = getattr(self.model, "noise_levels", None)
        if levels is None:
            return {}
        return {"noise_levels": list(levels), "noise_levels_file": self.config.model.noise_levels}

    def check_restored(self, restored) -> None:
        """Refuses a checkpoint whose recorded noise levels differ from the network's: its
        outputs would be divided by the wrong sigmas."""
        recorded = restored.meta.get("noise_levels")
        ours = getattr(self.model, "noise_levels", None)
        if recorded is None:
            return
        if ours is None or len(ours) != len(recorded) or not np.allclose(ours, recorded, rtol=1e-7):
            path = restored.meta.get("noise_levels_file") or "<workdir>/noise_levels.npy"
            raise ConfigError(
                f"The checkpoint {restored.path} uses its own {len(recorded)} noise levels "
                f"({recorded[0]:.6g} ... {recorded[-1]:.6g}), which this config's network does "
                f"not: add --config.model.noise_levels={path} "
                f"--config.model.num_scales={len(recorded)} to the command."
            )


def data_shape(config) -> tuple[int, ...]:
    """Shape of one example: ``(dim,)`` for vector data, ``(H, W, C)`` (NHWC) for images."""
    if config.data.get("dim", None):
        return (config.data.dim,)
    return (config.data.image_size, config.data.image_size, config.data.num_channels)


def build_experiment(config) -> Experiment:
    return Experiment(config)


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-host) global array, on every process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def check_workdir(workdir: str) -> None:
    """Work directories are filesystem paths (logs are appended and pictures written there)."""
    if "://" in str(workdir):
        raise ValueError(
            f"--workdir={workdir!r} is a URL; use a filesystem path every host can see (NFS, "
            "Filestore, or a bucket mounted with gcsfuse, e.g. /mnt/bucket/run)."
        )


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
        from scoresde_jax.data import TrainIterator

        d = config.data
        self.pcount, self.pindex = jax.process_count(), jax.process_index()
        self.train_source = builders.image_source_from_config(d, "train")
        self.eval_source = builders.image_source_from_config(d, "test")
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
        from scoresde_jax.sharding import to_global_array

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
        from scoresde_jax.data import train_batch
        from scoresde_jax.sharding import to_global_array

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
        sample_fn = builders.sampler_from_config(config.sampling, exp.sde)
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
