"""The training state: a pytree of step, parameters, EMA parameters and optimizer state."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any


def learning_rate_schedule(lr: float, warmup: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr`` over ``warmup`` steps, then constant (0: no warm-up)."""
    return optax.linear_schedule(0.0, lr, warmup) if warmup > 0 else optax.constant_schedule(lr)


def make_optimizer(
    *,
    lr: float = 2e-4,
    beta1: float = 0.9,
    eps: float = 1e-8,
    warmup: int = 5000,
    grad_clip: float = 1.0,
    weight_decay: float = 0.0,
    optimizer: str = "adam",
) -> optax.GradientTransformation:
    """Adam(W) with linear warm-up and global-norm gradient clipping (``grad_clip < 0``: none)."""
    schedule = learning_rate_schedule(lr, warmup)
    name = optimizer.lower()
    if name == "adam":
        opt = optax.adam(schedule, b1=beta1, eps=eps)
        if weight_decay:
            opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    elif name == "adamw":
        opt = optax.adamw(schedule, b1=beta1, eps=eps, weight_decay=weight_decay)
    else:
        raise ValueError(f"Unknown optimizer {optimizer!r}; use 'adam' or 'adamw'.")
    if grad_clip >= 0:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    return opt


def apply_gradients(
    state: TrainState, grads, optimizer: optax.GradientTransformation, ema_rate: float
) -> TrainState:
    """One optimizer step from ``grads``, the EMA updated, the step counted."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(
        step=state.step + 1,
        params=params,
        ema_params=ema_update(state.ema_params, params, ema_rate),
        opt_state=opt_state,
    )


def ema_update(ema_params, params, rate: float):
    """``ema <- rate * ema + (1 - rate) * params``."""
    return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema_params, params)


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh state at step 0 whose EMA starts at a copy of ``params`` (a buffer shared by two
    leaves cannot be donated to a jitted step)."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=optimizer.init(params),
    )
