"""Shared machinery for loading PyTorch ``state_dict`` arrays into Flax parameter trees.

Each network module knows how its Flax submodules are named relative to the PyTorch modules of
the reference implementation; it passes that knowledge in as a function from a Flax module path
to a PyTorch module prefix. Everything else (leaf names, layouts, strict key and shape checks)
is the same for every network and lives here.

Leaf conventions (Flax -> PyTorch):

* ``kernel`` of rank 4 -> ``weight`` of a ``Conv2d``: HWIO from OIHW.
* ``kernel`` of rank 2 -> ``weight`` of a ``Linear``: ``(in, out)`` from ``(out, in)``.
* ``scale`` (GroupNorm) and ``embedding`` (``nn.Embed``) -> ``weight``, unchanged.
* every other leaf keeps its name and layout (``bias``, NIN's ``W``/``b``, ``alpha``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

__all__ = ["abstract_params", "check_sigmas_buffer", "convert_state_dict", "strip_module_prefix"]

_MAX_LISTED = 12


def strip_module_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops the ``module.`` prefix that ``torch.nn.DataParallel`` checkpoints put on every key."""
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _leaf_to_torch(name: str, ndim: int) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    if name == "kernel" and ndim == 4:
        return "weight", lambda w: np.transpose(w, (2, 3, 1, 0))
    if name == "kernel" and ndim == 2:
        return "weight", np.transpose
    if name in ("scale", "embedding"):
        return "weight", lambda w: w
    return name, lambda w: w


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    abstract_params: Mapping,
    torch_prefix: Callable[[tuple[str, ...]], str],
    *,
    buffers: Mapping[str, Callable[[np.ndarray], None]] | None = None,
    model_name: str = "model",
) -> dict:
    """Builds a Flax ``params`` tree from a PyTorch ``state_dict`` (strict).

    Args:
      state_dict: PyTorch key -> array (``module.`` prefixes are removed first).
      abstract_params: the expected ``params`` tree (e.g. from ``jax.eval_shape`` of ``init``);
        only the shapes are used.
      torch_prefix: maps the path of the Flax module that owns a parameter (the parameter path
        without its leaf name) to the dotted PyTorch module name, e.g.
        ``("res1_0", "conv1") -> "res1.0.conv1"``.
      buffers: PyTorch keys that are not parameters (e.g. ``sigmas``), each with a check that
        raises ``ValueError`` when the stored value disagrees with the Flax model.
      model_name: used in error messages.

    Returns:
      The ``params`` tree (float32 numpy arrays) with the structure of ``abstract_params``.

    Raises:
      ValueError: a parameter of the model has no entry in the state dict, an entry has no
        counterpart in the model, or shapes disagree. All problems are listed at once.
    """
    state_dict = strip_module_prefix(state_dict)
    buffers = dict(buffers or {})
    flat = traverse_util.flatten_dict(abstract_params)
    out: dict[tuple[str, ...], np.ndarray] = {}
    used: set[str] = set()
    missing: list[str] = []
    mismatched: list[str] = []
    for path, leaf in flat.items():
        tname, to_flax = _leaf_to_torch(path[-1], len(leaf.shape))
        prefix = torch_prefix(path[:-1])
        key = f"{prefix}.{tname}" if prefix else tname
        if key not in state_dict:
            missing.append(f"{key} (for {'/'.join(path)}, shape {tuple(leaf.shape)})")
            continue
        used.add(key)
        value = to_flax(np.asarray(state_dict[key], dtype=np.float32))
        if value.shape != tuple(leaf.shape):
            mismatched.append(
                f"{key}: state_dict gives {value.shape} after layout conversion, "
                f"{model_name} expects {tuple(leaf.shape)} at {'/'.join(path)}"
            )
            continue
        out[path] = np.ascontiguousarray(value)
    unexpected = sorted(k for k in state_dict if k not in used and k not in buffers)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
    if problems:
        raise ValueError(
            f"The state_dict does not match this {model_name} (check that the model was built "
            "with the same config as the checkpoint):\n  " + "\n  ".join(problems)
        )
    for key, check in buffers.items():
        if key in state_dict:
            check(np.asarray(state_dict[key]))
    return traverse_util.unflatten_dict(out)


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
    expected: np.ndarray, model_name: str, *, used: bool = True
) -> Callable[[np.ndarray], None]:
    """A buffer check for the ``sigmas`` noise levels of the reference networks.

    The Flax networks compute their noise levels from ``sigma_min``, ``sigma_max`` and
    ``num_scales`` (or take ``model.noise_levels``); a checkpoint whose buffer disagrees was
    trained with other levels, and its outputs would be divided by the wrong sigma. Where the
    forward pass never reads the buffer (``used=False``) it is accepted as it is.
    """

    def check(value: np.ndarray) -> None:
        if not used:
            return
        value = np.asarray(value, dtype=np.float64)
        if value.shape != expected.shape or not np.allclose(value, expected, rtol=1e-6, atol=0.0):
            raise ValueError(sigmas_mismatch_message(value, expected, model_name))

    return check


def abstract_params(module, x_shape: tuple[int, ...], labels_dtype=jnp.int32) -> dict:
    """The ``params`` tree of ``module.init`` as shape/dtype structs (nothing is allocated).

    Args:
      module: a score network called as ``module(x, labels)``.
      x_shape: input shape ``[B, H, W, C]``.
      labels_dtype: dtype of the (all-zero) labels used for tracing.
    """

    def init():
        x = jnp.zeros(x_shape, jnp.float32)
        labels = jnp.zeros((x_shape[0],), labels_dtype)
        return module.init(jax.random.key(0), x, labels)

    return jax.eval_shape(init)["params"]
