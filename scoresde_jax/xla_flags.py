"""XLA:CPU settings the package makes when the user has not: set on ``import scoresde_jax``, as
``XLA_FLAGS`` is read once, when JAX starts its first backend.

* ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``: convolutions run on XLA's
  own (Eigen) kernels instead of YNNPACK. On a 2-core AMD EPYC the DDPM++ training step's
  gradient took 22.0 s with YNNPACK and 9.4 s without it, the forward pass 3.5 and 3.1 s
  (BENCHMARKS.md, "Networks").

A flag the user gives in ``XLA_FLAGS`` wins; ``SCORESDE_XLA_DEFAULTS=off`` leaves XLA's own
defaults. Flags of the CPU backend do not affect GPU or TPU programs.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

ENV = "SCORESDE_XLA_DEFAULTS"
DEFAULTS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}


def _given(flags: str, name: str) -> bool:
    return any(f.lstrip("-").split("=", 1)[0] == name for f in flags.split())


def apply(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Adds each of :data:`DEFAULTS` that ``environ["XLA_FLAGS"]`` does not name; returns the
    flags added (none when ``$SCORESDE_XLA_DEFAULTS`` is ``off``)."""
    if environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no", "none"):
        return []
    flags = environ.get("XLA_FLAGS", "")
    added = [f"--{k}={v}" for k, v in DEFAULTS.items() if not _given(flags, k)]
    if added:
        environ["XLA_FLAGS"] = " ".join([flags.strip(), *added]).strip()
    return added
