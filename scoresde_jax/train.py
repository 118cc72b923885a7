"""The training loop: config -> data -> sharded state -> jitted steps -> checkpoints and logs."""

from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scoresde_jax import builders, plotting
from scoresde_jax.checkpoint import Checkpointer
from scoresde_jax.data import make_toy_dataset
from scoresde_jax.score import get_score_fn
from scoresde_jax.sharding import make_data_mesh, put_global_batch, replicated
from scoresde_jax.state import init_state
from scoresde_jax.train_step import make_train_step

__all__ = ["train", "Experiment", "build_experiment", "NonFiniteLossError"]

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or Inf."""


class Experiment:
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

    def score_fn(self, params):
        model_fn = lambda x, labels: self.model.apply(params, x, labels, train=False)
        return get_score_fn(self.sde, model_fn, continuous=self.continuous)


def data_shape(config) -> tuple[int, ...]:
    """Shape of one example: ``(dim,)`` for vector data, ``(H, W, C)`` (NHWC) for images."""
    if config.data.get("dim", None):
        return (config.data.dim,)
    return (config.data.image_size, config.data.image_size, config.data.num_channels)


def build_experiment(config) -> Experiment:
    return Experiment(config)


def _toy_batches(train_data: np.ndarray, batch_size: int, n_steps: int, seed: int, step: int):
    # Indices depend only on (seed, step), so a resumed run sees exactly the same batches.
    rng = np.random.default_rng([seed, step])
    idx = rng.integers(0, train_data.shape[0], size=(n_steps, batch_size))
    return train_data[idx]


def train(config, workdir: str):
    """Trains the model described by ``config``; checkpoints and logs go to ``workdir``.

    Resumes automatically from the latest checkpoint in ``workdir/checkpoints``.

    Returns:
      The final training state.
    """
    os.makedirs(workdir, exist_ok=True)
    exp = build_experiment(config)
    tc = config.training
    n_jit = tc.n_jitted_steps
    if tc.snapshot_freq % n_jit or tc.log_freq % n_jit or tc.n_iters % n_jit:
        raise ValueError(
            f"training.n_jitted_steps={n_jit} must divide snapshot_freq ({tc.snapshot_freq}), "
            f"log_freq ({tc.log_freq}) and n_iters ({tc.n_iters})."
        )
    if config.data.dataset_kind != "toy":
        raise NotImplementedError(
            f"Training on data.dataset_kind={config.data.dataset_kind!r} is not available yet: "
            "the image input pipeline is still to come. Image configs already build their "
            "networks, convert weights and sample (--mode sample); train a toy config meanwhile."
        )
    train_data = make_toy_dataset(config.data.dataset, config.data.n_train, config.data.seed)

    ckpt = Checkpointer(workdir, max_to_keep=tc.get("max_to_keep", 3))
    if ckpt.latest_step() is not None:
        state = ckpt.restore(exp.abstract_target())
        log.info("Resumed from step %d in %s", int(state.step), ckpt.directory)
    else:
        state = exp.init_state()
    start = int(jax.device_get(state.step))

    step_fn = make_train_step(
        model=exp.model,
        loss_fn=exp.loss_fn,
        optimizer=exp.optimizer,
        ema_rate=config.model.ema_rate,
        seed_key=exp.train_key,
        unroll=tc.get("scan_unroll", 1),
    )
    batch_sharding = jax.sharding.NamedSharding(exp.mesh, jax.sharding.PartitionSpec(None, "data"))
    p_step = jax.jit(
        step_fn,
        in_shardings=(exp.state_sharding, batch_sharding),
        out_shardings=(exp.state_sharding, replicated(exp.mesh)),
        donate_argnums=0,
    )
    sample_fn = builders.sampler_from_config(config.sampling, exp.sde)
    snapshot = jax.jit(
        lambda params, key: sample_fn(exp.score_fn(params), key, (tc.snapshot_samples, 2)).x
    )

    metrics_path = os.path.join(workdir, "metrics.jsonl")
    bar = tqdm(
        total=tc.n_iters,
        initial=start,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not tc.get("progress_bar", True),
    )
    t_last, s_last = time.perf_counter(), start
    for step in range(start, tc.n_iters, n_jit):
        batches = _toy_batches(train_data, tc.batch_size, n_jit, config.seed, step)
        batches = put_global_batch(batches, exp.mesh, batch_axis=1)
        new_state, metrics = p_step(state, batches)
        metrics = jax.device_get(metrics)
        if not metrics["all_finite"] or not math.isfinite(metrics["loss"]):
            ckpt.wait()
            raise NonFiniteLossError(
                f"Training loss became {metrics['loss']} between steps {step} and {step + n_jit}. "
                f"The last good checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} "
                "is kept. "
                "Lower optim.lr, check the data scaling, or enable optim.grad_clip."
            )
        state = new_state
        done = step + n_jit
        bar.update(n_jit)
        if done % tc.log_freq == 0 or done == tc.n_iters:
            now = time.perf_counter()
            rate = (done - s_last) / max(now - t_last, 1e-9)
            t_last, s_last = now, done
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", steps_per_s=f"{rate:.0f}")
            with open(metrics_path, "a") as f:
                row = {"step": done, "loss": float(metrics["loss"]), "steps_per_s": rate}
                row["grad_norm"] = float(metrics["grad_norm"])
                f.write(json.dumps(row) + "\n")
        if done % tc.snapshot_freq == 0 or done == tc.n_iters:
            ckpt.save(state, force=True)
            if tc.get("snapshot_sampling", True):
                key = jax.random.fold_in(exp.eval_key, done)
                samples = np.asarray(snapshot(state.ema_params, key))
                os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
                plotting.scatter_samples(
                    os.path.join(workdir, "samples", f"step_{done}.png"),
                    data=train_data[: len(samples)],
                    samples=samples,
                    title=f"{config.data.dataset}, step {done}",
                )
    bar.close()
    ckpt.wait()
    ckpt.close()
    return state
