"""Multi-host start-up: one process per host, joined with ``jax.distributed.initialize``."""

from __future__ import annotations

import logging

import jax

log = logging.getLogger(__name__)


def initialize(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins this process to the multi-host job (before any other JAX call); JAX detects the
    arguments on TPU pods, SLURM, Open MPI and Kubernetes."""
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
