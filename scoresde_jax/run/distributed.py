"""Multi-host start-up: one process per host, joined with ``jax.distributed.initialize``.

Every process runs the same command. On Cloud TPU pods, SLURM, Open MPI and Kubernetes JAX finds
the coordinator, the number of processes and each process's id by itself; elsewhere they are
given explicitly (``--coordinator_address``, ``--num_processes``, ``--process_id`` on the command
line, or the ``JAX_COORDINATOR_ADDRESS`` environment variable for the address).
"""

from __future__ import annotations

import logging

import jax

__all__ = ["initialize"]

log = logging.getLogger(__name__)


def initialize(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins this process to the multi-host job (must run before any other JAX call).

    Args:
      coordinator_address: ``host:port`` of process 0 (``None``: detected from the cluster).
      num_processes: number of processes in the job (``None``: detected).
      process_id: this process's index in ``[0, num_processes)`` (``None``: detected).
    """
    explicit = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit[1:]):
        raise ValueError(
            "A manual multi-host setup needs --num_processes and --process_id (and "
            "--coordinator_address or JAX_COORDINATOR_ADDRESS); on TPU pods, SLURM, Open MPI "
            "or Kubernetes give none of them and let JAX detect the cluster."
        )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    log.info(
        "Process %d of %d: %d local device(s), %d in total.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
