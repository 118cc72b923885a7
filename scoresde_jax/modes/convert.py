"""Checkpoints of the paper's code -> our Orbax training state (``python -m scoresde_jax.convert``).

``torch``: a ``score_sde_pytorch`` ``.pth`` (``model``: a DataParallel ``state_dict``, ``ema``:
``shadow_params`` in parameter order, ``optimizer``: Adam, ``step``) or a bare ``state_dict``
(``.pth``/``.npz``: EMA = weights, step 0). ``flax``: a ``score_sde`` msgpack checkpoint or a bare
parameter tree. A network module of :data:`scoresde_jax.models.MODELS` plugs in with
``params_from_torch_state_dict(state_dict, model)`` and optionally ``params_from_flax_tree(tree,
model)`` and ``torch_trainable_keys(keys, model)`` (the order of the EMA's ``shadow_params``).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scoresde_jax.errors import UserError
from scoresde_jax.io.state_dict import read_torch_file, strip_module_prefix
from scoresde_jax.models import MODELS
from scoresde_jax.run.checkpoint import Checkpointer
from scoresde_jax.run.experiment import build_experiment
from scoresde_jax.run.state import TrainState

log = logging.getLogger(__name__)

# PyTorch buffers that are not parameters (never in the EMA or the optimizer).
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _is_buffer(key: str) -> bool:
    return key == "sigmas" or key.split(".")[-1] in _BUFFER_SUFFIXES


def _float32(value) -> np.ndarray:
    value = np.asarray(value)  # floating tensors of any width become float32
    floating = value.dtype.kind == "f" or value.dtype.name == "bfloat16"
    return value.astype(np.float32) if floating else value


def _arrays(mapping: Mapping) -> dict:
    return {k: _float32(v) for k, v in mapping.items()}


def load_torch_checkpoint(path: str) -> dict[str, Any]:
    """A PyTorch checkpoint (``.pth``/``.pt``, read without PyTorch) or a state_dict ``.npz``:
    ``model`` (key -> array, in file order; floats of a ``.pth`` as float32) and, for a training
    checkpoint, ``ema`` (``shadow_params``), ``optimizer`` (its ``state_dict``) and ``step``."""
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {"model": {k: data[k] for k in data.files}}
    raw = read_torch_file(path)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    if "model" not in raw:  # a bare state_dict
        return {"model": _arrays(raw)}
    out: dict[str, Any] = {"model": _arrays(raw["model"])}
    if raw.get("ema") is not None:
        out["ema"] = [_float32(p) for p in raw["ema"]["shadow_params"]]
    if raw.get("optimizer") is not None:
        opt = raw["optimizer"]
        state = {int(i): _arrays(s) for i, s in opt["state"].items()}
        out["optimizer"] = {"state": state, "param_groups": opt["param_groups"]}
    if "step" in raw:
        out["step"] = int(raw["step"])
    return out


def load_flax_checkpoint(path: str) -> dict[str, Any]:
    """Reads an original ``score_sde`` msgpack checkpoint into nested dicts of numpy arrays."""
    from flax import serialization

    with open(path, "rb") as f:
        return serialization.msgpack_restore(f.read())


def _trainable_keys(module, keys: list[str], model) -> list[str]:
    if hasattr(module, "torch_trainable_keys"):
        return list(module.torch_trainable_keys(keys, model))
    return [k for k in strip_module_prefix(dict.fromkeys(keys)) if not _is_buffer(k)]


def _with_adam_moments(opt_state, mu, nu, step: int):
    """``opt_state`` with its Adam moments replaced and every step counter set to ``step``."""
    count = jnp.asarray(step, jnp.int32)
    fields = {"count": count}
    if mu is not None:
        fields.update(mu=mu, nu=nu)
    try:
        return optax.tree_utils.tree_set(opt_state, **fields)
    except KeyError:
        log.warning("The optimizer has no Adam state; its state starts fresh.")
        return opt_state


def state_from_torch(ckpt: Mapping[str, Any], model, optimizer, module=None) -> TrainState:
    """A :class:`TrainState` from :func:`load_torch_checkpoint`'s result (``module``: the one
    with ``params_from_torch_state_dict``, default the network's own); Adam moments when present,
    so training can resume."""
    module = module or importlib.import_module(type(model).__module__)
    convert = module.params_from_torch_state_dict
    sd = strip_module_prefix(ckpt["model"])
    params = convert(sd, model)

    ema_params = params
    if ckpt.get("ema") is not None:
        trainable = _trainable_keys(module, list(sd), model)
        shadow = ckpt["ema"]
        if len(shadow) != len(trainable):
            raise ValueError(
                f"The EMA has {len(shadow)} shadow parameters but the model state_dict has "
                f"{len(trainable)} trainable parameters; the checkpoint is inconsistent."
            )
        ema_sd = dict(sd)
        for key, value in zip(trainable, shadow, strict=True):
            if tuple(value.shape) != tuple(sd[key].shape):
                raise ValueError(
                    f"EMA shadow parameter for {key} has shape {value.shape}, the model's "
                    f"{sd[key].shape}: the EMA is not in parameter order."
                )
            ema_sd[key] = value
        ema_params = convert(ema_sd, model)

    step = int(ckpt.get("step", 0))
    opt_state = optimizer.init(params)
    mu = nu = None
    if ckpt.get("optimizer") is not None and ckpt["optimizer"]["state"]:
        # PyTorch's optimizer indexes model.parameters(): every state_dict key but buffers.
        param_keys = [k for k in sd if not _is_buffer(k)]
        exp_avg, exp_avg_sq = dict(sd), dict(sd)
        for i, key in enumerate(param_keys):
            s = ckpt["optimizer"]["state"].get(i)
            exp_avg[key] = s["exp_avg"] if s else np.zeros_like(sd[key])
            exp_avg_sq[key] = s["exp_avg_sq"] if s else np.zeros_like(sd[key])
        mu, nu = convert(exp_avg, model), convert(exp_avg_sq, model)
    return _train_state(step, params, ema_params, _with_adam_moments(opt_state, mu, nu, step))


def _train_state(step: int, params, ema_params, opt_state) -> TrainState:
    return TrainState(jnp.asarray(step, jnp.int32), params, ema_params, opt_state)


def _flax_params(module, tree, model):
    if hasattr(module, "params_from_flax_tree"):
        return module.params_from_flax_tree(tree, model)
    return {"params": tree}


def state_from_flax(raw: Mapping[str, Any], model, optimizer, module=None) -> TrainState:
    """A :class:`TrainState` from an original ``score_sde`` checkpoint (or a bare param tree)."""
    module = module or importlib.import_module(type(model).__module__)
    if "optimizer" not in raw:  # a bare parameter tree
        params = _flax_params(module, raw, model)
        return _train_state(0, params, params, optimizer.init(params))
    target = raw["optimizer"]["target"]
    params = _flax_params(module, target, model)
    ema_params = _flax_params(module, raw.get("params_ema", target), model)
    step = int(np.asarray(raw.get("step", 0)).reshape(-1)[0])
    mu = nu = None
    param_states = raw["optimizer"].get("state", {}).get("param_states")
    if param_states:
        mu = _flax_params(module, _pick_leaf_field(param_states, "grad_ema"), model)
        nu = _flax_params(module, _pick_leaf_field(param_states, "grad_sq_ema"), model)
    opt_state = _with_adam_moments(optimizer.init(params), mu, nu, step)
    return _train_state(step, params, ema_params, opt_state)


def _pick_leaf_field(tree: Mapping, field: str):
    # flax.optim stores one {grad_ema, grad_sq_ema} record per parameter.
    if field in tree and not isinstance(tree[field], Mapping):
        return tree[field]
    return {k: _pick_leaf_field(v, field) for k, v in tree.items()}


class ConversionInputError(UserError, ValueError):
    """The checkpoint does not fit the config (or cannot be read)."""


class StepExistsError(UserError, FileExistsError):
    """The work directory already holds a checkpoint of the step being converted."""


NOISE_LEVELS_FILE = "noise_levels.npy"


def convert_checkpoint(
    config,
    *,
    source: str,
    checkpoint: str,
    workdir: str,
    step: int | None = None,
    noise_levels: str = "config",
) -> TrainState:
    """Converts ``checkpoint`` (trained with ``config``) into ``workdir/checkpoints`` at ``step``
    (default its own); returns the saved state. Noise levels come from the config (a ``sigmas``
    buffer the network reads must equal them) or, with ``"checkpoint"``, from the buffer, saved to
    ``workdir/noise_levels.npy`` for later commands."""
    if source not in ("torch", "flax"):
        raise ConversionInputError(f"Unknown source {source!r}; use 'torch' or 'flax'.")
    if noise_levels not in ("config", "checkpoint"):
        raise ConversionInputError(f"noise_levels={noise_levels!r}; use 'config' or 'checkpoint'.")
    raw = load_torch_checkpoint(checkpoint) if source == "torch" else None
    if noise_levels == "checkpoint":
        if source != "torch":
            raise ConversionInputError(
                "--noise_levels=checkpoint reads the sigmas buffer of a score_sde_pytorch "
                "checkpoint; the Flax checkpoints of score_sde have none."
            )
        sd = strip_module_prefix(raw["model"])
        if "sigmas" not in sd:
            raise ConversionInputError(
                "--noise_levels=checkpoint: the checkpoint has no sigmas buffer; convert with the "
                "default --noise_levels=config."
            )
        levels = np.asarray(sd["sigmas"], np.float64).reshape(-1)
        os.makedirs(workdir, exist_ok=True)
        levels_path = os.path.abspath(os.path.join(workdir, NOISE_LEVELS_FILE))
        np.save(levels_path, levels)
        config = config.copy_and_resolve_references()
        config.model.num_scales = len(levels)
        config.model.noise_levels = levels_path
        log.info(
            f"The network uses the checkpoint's {len(levels)} noise levels ({levels_path}); pass "
            f"--config.model.noise_levels={levels_path} --config.model.num_scales={len(levels)} "
            "to later commands."
        )
    exp = build_experiment(config)  # refuses an unknown config.model.name
    module = importlib.import_module(MODELS[config.model.name])
    try:
        if source == "torch":
            state = state_from_torch(raw, exp.model, exp.optimizer, module)
        else:
            raw = load_flax_checkpoint(checkpoint)
            state = state_from_flax(raw, exp.model, exp.optimizer, module)
    except ValueError as e:  # the weights do not fit the config's network
        raise ConversionInputError(str(e)) from None
    if step is not None:
        state = state.replace(step=jnp.asarray(step, jnp.int32))

    expected = jax.tree.structure(exp.abstract_state)
    if jax.tree.structure(state) != expected:
        raise ConversionInputError(
            "The converted state does not have the structure of the experiment's state:\n"
            f"  converted: {jax.tree.structure(state)}\n  expected:  {expected}"
        )
    state = jax.tree.map(lambda x, a: jnp.asarray(x, a.dtype), state, exp.abstract_state)
    state = jax.device_put(state, exp.state_sharding)

    ckpt = Checkpointer(workdir)
    saved_step = int(state.step)
    if saved_step in ckpt.all_steps():
        ckpt.close()
        raise StepExistsError(
            f"{ckpt.directory} already has a checkpoint for step {saved_step}; convert into an "
            "empty workdir or choose another --step."
        )
    ckpt.save(state, force=True, meta=exp.checkpoint_meta())
    ckpt.close()
    log.info("Saved step %d to %s", saved_step, ckpt.directory)
    return state
