"""The device mesh: parameters replicated, batches split along the ``data`` axis.

Samplers and the likelihood ODE run under ``shard_map``: each device takes its slice of the batch
(and, for adaptive solvers, its own step sizes), with no communication until the results gather.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over all (or the first ``num_devices``) devices of all hosts."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={num_devices} but {len(devices)} devices are visible")
    # Auto axes: XLA propagates shardings from the inputs (params replicated, batch split), so
    # model code needs no sharding annotations.
    return jax.make_mesh(
        (n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n]
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Shards dimension ``batch_axis`` of an array over the ``data`` axis of the mesh."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), "data"))


def put_global_batch(x: np.ndarray, mesh: Mesh, batch_axis: int = 0) -> jax.Array:
    """Places a host array holding the *global* batch (the same on every process) on the mesh,
    sharded along ``batch_axis``."""
    n = mesh.shape["data"]
    if x.shape[batch_axis] % n:
        raise ValueError(
            f"batch dimension {x.shape[batch_axis]} is not divisible by the {n} devices of the "
            "mesh; choose a batch size that is a multiple of the device count"
        )
    sharding = batch_sharding(mesh, batch_axis)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def to_global_array(local: np.ndarray, mesh: Mesh, batch_axis: int = 0) -> jax.Array:
    """One global ``jax.Array`` from each process's *local* slice: their concatenation along
    ``batch_axis`` in the mesh's device order (process by process for :func:`make_data_mesh`)."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh, batch_axis), local)


def device_count(mesh: Mesh) -> int:
    return int(mesh.shape["data"])


def sharded_sampler(
    mesh: Mesh, sample_fn: Callable, make_score_fn: Callable, shape: tuple[int, ...]
) -> Callable:
    """``run(params, key) -> (samples [n, ...], max nfe over devices)``, ``n = shape[0]``.

    ``sample_fn(score_fn, key, shape) -> SampleResult``; ``make_score_fn(params) -> score_fn``.
    Device ``i`` draws its ``n / num_devices`` samples from ``fold_in(key, i)`` (so the result
    depends on the device count and nothing else).
    """
    n = device_count(mesh)
    if shape[0] % n:
        raise ValueError(
            f"{shape[0]} samples cannot be split evenly over {n} devices; use a multiple of {n}."
        )
    local_shape = (shape[0] // n, *shape[1:])

    def per_device(params, key):
        res = sample_fn(make_score_fn(params), key, local_shape)
        return res.x, jnp.reshape(jnp.asarray(res.nfe, jnp.int32), (1,))

    mapped = sharded_batch_fn(mesh, per_device, num_batched=0, num_outputs=2)

    @jax.jit
    def run(params, key):
        x, nfe = mapped(params, key)
        return x, jnp.max(nfe)

    return run


def sharded_batch_fn(
    mesh: Mesh,
    fn: Callable,
    num_batched: int,
    num_outputs: int,
    *,
    compiler_options: dict[str, str] | None = None,
) -> Callable:
    """Jit-compiles ``fn(params, key, *batched) -> tuple of [b, ...] arrays`` per device:
    ``params`` and ``key`` replicated (device ``i`` uses ``fold_in(key, i)``), the
    ``num_batched`` others and every output split along the first axis; ``compiler_options``
    go to ``jax.jit``."""

    def per_device(params, key, *batched):
        key = jax.random.fold_in(key, jax.lax.axis_index("data"))
        return tuple(fn(params, key, *batched))

    mapped = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(), *[PartitionSpec("data")] * num_batched),
        out_specs=tuple([PartitionSpec("data")] * num_outputs),
        check_vma=False,
    )
    return jax.jit(mapped, compiler_options=compiler_options)


def map_fixed_batches(
    fn: Callable[[np.ndarray], tuple], x: np.ndarray, batch_size: int
) -> tuple[np.ndarray, ...]:
    """Applies ``fn`` (returning a tuple of ``[b, ...]`` arrays) to ``x`` in chunks of exactly
    ``batch_size`` rows (the last zero-padded, so a compiled ``fn`` sees one shape; the padding's
    outputs are dropped); returns numpy outputs."""
    if len(x) == 0:
        raise ValueError("map_fixed_batches needs at least one row")
    outputs = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        n = len(chunk)
        if n < batch_size:
            padding = np.zeros((batch_size - n, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, padding])
        outputs.append([np.asarray(o)[:n] for o in fn(chunk)])
    return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))
