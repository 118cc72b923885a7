"""XLA:CPU settings the package makes when the user has not: set on ``import scoresde_jax``, as
``XLA_FLAGS`` is read once, when JAX starts its first backend.

* ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``: convolutions run on XLA's
  own (Eigen) kernels instead of YNNPACK. On a 2-core AMD EPYC the DDPM++ training step's
  gradient took 22.0 s with YNNPACK and 9.4 s without it, the forward pass 3.5 and 3.1 s
  (BENCHMARKS.md, "Networks").

Likelihood programs (:func:`solve_compiler_options`, passed to ``jax.jit`` where the package
compiles a log-likelihood solve) go further and compile with no YNNPACK fusion at all. Inside the
ODE solver's loop YNNPACK fuses the divergence's forward-mode (tangent) matrix products into
one slow fusion: bits/dim of a 3072-D MLP score at batch 8 cost 19 ms per network evaluation with
XLA's default fusions and 6.5 ms without any. The training step keeps YNNPACK's other fusions,
which it needs (the step is 1.35x slower without the reduction fusion).

A flag the user gives in ``XLA_FLAGS`` wins; ``SCORESDE_XLA_DEFAULTS=off`` leaves XLA's own
defaults. Flags of the CPU backend do not affect GPU or TPU programs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

ENV = "SCORESDE_XLA_DEFAULTS"
DEFAULTS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
# Per-program options (the full set of YNNPACK fusion types, by enum name; empty: none).
SOLVE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _given(flags: str, name: str, ours: tuple[str, ...] = ()) -> bool:
    """Whether ``flags`` set ``name`` (a token in ``ours``, one :func:`apply` added, does not
    count)."""
    return any(f.lstrip("-").split("=", 1)[0] == name for f in flags.split() if f not in ours)


def _off(environ: Mapping[str, str]) -> bool:
    return environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no", "none")


def apply(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Adds each of :data:`DEFAULTS` that ``environ["XLA_FLAGS"]`` does not name; returns the
    flags added (none when ``$SCORESDE_XLA_DEFAULTS`` is ``off``)."""
    if _off(environ):
        return []
    flags = environ.get("XLA_FLAGS", "")
    added = [f"--{k}={v}" for k, v in DEFAULTS.items() if not _given(flags, k)]
    if added:
        environ["XLA_FLAGS"] = " ".join([flags.strip(), *added]).strip()
    return added


def solve_compiler_options(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """``compiler_options`` for ``jax.jit`` of a likelihood solve: :data:`SOLVE_OPTIONS` on the
    CPU backend, ``None`` (XLA's choice) on others, when ``$SCORESDE_XLA_DEFAULTS`` is off, or
    when the user's ``XLA_FLAGS`` name the fusion flag."""
    flags, ours = environ.get("XLA_FLAGS", ""), tuple(f"--{k}={v}" for k, v in DEFAULTS.items())
    if _off(environ) or any(_given(flags, k, ours) for k in SOLVE_OPTIONS):
        return None
    import jax  # only here: importing this module must not start JAX

    return dict(SOLVE_OPTIONS) if jax.default_backend() == "cpu" else None
