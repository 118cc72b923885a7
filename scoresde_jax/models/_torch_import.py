"""What the score networks share to import PyTorch weights: traced parameter shapes and call order
(of the reference U-Nets' ``all_modules``) and the ``sigmas`` buffer check; reading state dicts
and mapping layouts is :mod:`scoresde_jax.io.state_dict`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.io.state_dict import ConversionError


def trace(module, x_shape: tuple[int, ...], labels_dtype=jnp.int32) -> tuple[dict, tuple]:
    """``module.init``'s variables as shape/dtype structs and the names of its direct submodules in
    the order ``module(zeros(x_shape), labels)`` first calls them: the PyTorch ports' ``forward``
    walks ``all_modules`` in that order."""
    order: list[str] = []

    def record(next_fun, args, kwargs, context):
        path = context.module.path
        if context.method_name == "__call__" and len(path) == 1 and path[0] not in order:
            order.append(path[0])
        return next_fun(*args, **kwargs)

    def init():
        labels = jnp.zeros((x_shape[0],), labels_dtype)
        return module.init(jax.random.key(0), jnp.zeros(x_shape, jnp.float32), labels)

    with nn.intercept_methods(record):
        variables = jax.eval_shape(init)
    return variables, tuple(order)


def abstract_params(module, x_shape: tuple[int, ...], labels_dtype=jnp.int32) -> dict:
    """The ``params`` tree of :func:`trace`."""
    return trace(module, x_shape, labels_dtype)[0]["params"]


def all_modules_prefix(index: Mapping[str, int], model_name: str) -> Callable[[tuple], str]:
    """``torch_prefix`` for networks whose layers are the reference's ``all_modules`` list;
    ``index`` maps each top-level Flax submodule to its position there."""

    def torch_prefix(path: tuple[str, ...]) -> str:
        if path[0] not in index:
            raise ValueError(f"{model_name} parameter under {path[0]!r} has no reference layer")
        return ".".join((f"all_modules.{index[path[0]]}", *path[1:]))

    return torch_prefix


def reproducing_config(buffer: np.ndarray) -> tuple[float, float, int] | None:
    """``(sigma_min, sigma_max, num_scales)`` whose geometric sequence is ``buffer``, if any."""
    b = np.asarray(buffer, np.float64).reshape(-1)
    if len(b) < 2 or not np.all(b > 0) or not np.all(np.diff(b) < 0):
        return None
    geometric = np.exp(np.linspace(np.log(b[0]), np.log(b[-1]), len(b)))
    if not np.allclose(b, geometric, rtol=2e-6, atol=0.0):
        return None
    # Nine significant digits: what a float32 buffer holds, and what a config would say.
    return float(f"{b[-1]:.9g}"), float(f"{b[0]:.9g}"), len(b)


def sigmas_mismatch_message(buffer: np.ndarray, expected: np.ndarray, model_name: str) -> str:
    """Why a ``sigmas`` buffer cannot be used as it is, and the two ways out."""
    b = np.asarray(buffer, np.float64).reshape(-1)
    e = np.asarray(expected, np.float64).reshape(-1)
    if b.shape != e.shape:
        detail = f"{len(b)} levels against num_scales={len(e)}"
    else:
        worst = int(np.argmax(np.abs(b - e) / e))
        detail = f"index {worst}: {b[worst]:.9g} against {e[worst]:.9g}"
    head = (
        f"The checkpoint's sigmas buffer ({len(b)} levels, {b[0]:.6g} ... {b[-1]:.6g}) differs "
        f"from the noise levels of this {model_name}'s config ({detail}), and the network "
        "divides its output by them."
    )
    found = reproducing_config(b)
    if found is not None:
        lo, hi, n = found
        return (
            f"{head} The buffer is the geometric sequence of --config.model.sigma_min={lo!r} "
            f"--config.model.sigma_max={hi!r} --config.model.num_scales={n}: convert with those "
            "(and use them in every later command), or convert with --noise_levels=checkpoint."
        )
    return (
        f"{head} No sigma_min, sigma_max and num_scales reproduce it (it is not a geometric "
        "sequence); convert with --noise_levels=checkpoint to use the checkpoint's own levels."
    )


def check_sigmas_buffer(
    expected: np.ndarray, model_name: str, *, used: bool = True, rtol: float = 1e-6
) -> Callable[[np.ndarray], None]:
    """A check that a ``sigmas`` buffer equals the levels the network computes (else its output
    would be divided by the wrong sigma); any buffer passes where it is not ``used``."""

    def check(value: np.ndarray) -> None:
        if not used:
            return
        value = np.asarray(value, dtype=np.float64)
        if value.shape != expected.shape or not np.allclose(value, expected, rtol=rtol, atol=0.0):
            raise ConversionError(sigmas_mismatch_message(value, expected, model_name))

    return check
