"""Device mesh and shardings: parameters replicated, batches split along the ``data`` axis."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["make_data_mesh", "replicated", "batch_sharding", "put_global_batch", "to_global_array"]


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
    """Places a host array holding the *global* batch on the mesh, sharded along ``batch_axis``.

    Every process passes the same global array (single-host and the toy datasets); each device
    receives only its slice.
    """
    n = mesh.shape["data"]
    if x.shape[batch_axis] % n:
        raise ValueError(
            f"batch dimension {x.shape[batch_axis]} is not divisible by the {n} devices of the "
            "mesh; choose a batch size that is a multiple of the device count"
        )
    sharding = batch_sharding(mesh, batch_axis)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def to_global_array(local: np.ndarray, mesh: Mesh, batch_axis: int = 0) -> jax.Array:
    """Assembles each process's *local* part of a batch into one global ``jax.Array``.

    Dimension ``batch_axis`` is sharded over the ``data`` axis of the mesh: process ``i``
    contributes its own slice (e.g. from :func:`scoresde_jax.data.train_batch`), and the global
    batch is the concatenation of the slices in the order of the mesh's devices (process by
    process for :func:`make_data_mesh`). With a single process the result equals ``local``.
    """
    return jax.make_array_from_process_local_data(batch_sharding(mesh, batch_axis), local)
