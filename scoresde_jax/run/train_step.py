"""The pure training step: ``step(state, batches) -> (state, metrics)``."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from scoresde_jax.run.state import TrainState, apply_gradients


def make_train_step(
    *,
    model: nn.Module,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    ema_rate: float,
    seed_key: jax.Array,
    unroll: int | bool = 1,
) -> Callable:
    """``step(state, batches)``: ``len(batches)`` optimizer steps in one ``lax.scan``, step ``s``
    drawing from ``fold_in(seed_key, s)`` (resuming needs only ``state.step``). ``unroll=True``
    unrolls the scan, which XLA:CPU needs for convolutional networks to run at full speed."""

    def one_step(state: TrainState, batch: jax.Array):
        key = jax.random.fold_in(seed_key, state.step)
        loss_key, dropout_key = jax.random.split(key)

        def objective(params):
            model_fn = lambda x, labels: model.apply(
                params, x, labels, train=True, rngs={"dropout": dropout_key}
            )
            loss, _ = loss_fn(model_fn, batch, loss_key)
            return loss

        loss, grads = jax.value_and_grad(objective)(state.params)
        new_state = apply_gradients(state, grads, optimizer, ema_rate)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    def step(state: TrainState, batches: jax.Array):
        if batches.shape[0] == 1:
            # No loop for a single step: on XLA:CPU a convolutional network inside a while loop
            # runs ~30x slower than the same computation outside one (BENCHMARKS.md).
            state, metrics = one_step(state, batches[0])
            metrics = jax.tree.map(lambda v: v[None], metrics)
        else:
            state, metrics = jax.lax.scan(one_step, state, batches, unroll=unroll)
        # Report the mean over the scanned steps, and whether any of them was not finite.
        finite = jnp.all(jnp.isfinite(metrics["loss"]))
        return state, {k: jnp.mean(v) for k, v in metrics.items()} | {"all_finite": finite}

    return step


def make_eval_loss(*, model: nn.Module, loss_fn: Callable, seed_key: jax.Array) -> Callable:
    """``eval_loss(state, batch)`` of the EMA parameters, noise from ``fold_in(seed_key, step)``."""

    def eval_loss(state: TrainState, batch: jax.Array):
        key = jax.random.fold_in(seed_key, state.step)
        model_fn = lambda x, labels: model.apply(state.ema_params, x, labels, train=False)
        loss, _ = loss_fn(model_fn, batch, key)
        return loss

    return eval_loss
