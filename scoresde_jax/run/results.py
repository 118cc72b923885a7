"""Saved results in ``<kind>-<fingerprint>``, a hash of every setting that changes their numbers
(with the metric's :data:`METRIC_VERSIONS` entry; ``settings.json`` holds them), reused only on an
exact match; reports that keep their history."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from scoresde_jax.core import odeint

# Bump a version when a result's definition changes, so older results are not reused.
METRIC_VERSIONS = dict.fromkeys(
    ("eval_loss", "samples", "sample_metrics", "reference_stats"), 1
) | {"bpd": 2, "toy_eval": 2}  # 2: the ODE solver's first step by odeint.STEP_RULE 2

# Sampling fields of other modes (--mode sample, controllable tasks): they do not change the
# samples of --mode eval.
_NOT_SAMPLER_FIELDS = frozenset(
    "batch_size task label task_inputs task_split num_inputs num_completions inpaint_mask "
    "perturb_known_init classifier_scale".split()
)
# Network fields used only by training.
_TRAINING_ONLY_MODEL_FIELDS = frozenset({"ema_rate", "dropout"})
# Data fields used only by training (flips, the training loss's dequantization).
_TRAINING_ONLY_DATA_FIELDS = frozenset({"random_flip", "uniform_dequantization"})


def canonical(value: Any, *, strict: bool = False) -> Any:
    """``value`` as plain JSON types, dicts sorted; ``strict``: NaN and infinities as ``None``."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): canonical(value[k], strict=strict) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v, strict=strict) for v in value]
    if isinstance(value, np.ndarray):
        return canonical(value.tolist(), strict=strict)
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        value = float(value)
        return None if strict and not math.isfinite(value) else value
    return value


def fingerprint(settings: Mapping) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of ``settings``."""
    text = json.dumps(canonical(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def json_ready(value: Any) -> Any:
    """A report value as strict JSON: :func:`canonical`, NaN and infinities as ``None``."""
    return canonical(value, strict=True)


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes ``obj`` as strict JSON through a temporary file and a rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(json_ready(obj), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def _now_text(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() if t is None else t))


class ResultDir:
    """The directory ``<root>/<kind>-<fingerprint>`` of one result with its ``settings.json``."""

    def __init__(self, root: str, kind: str, settings: Mapping):
        self.kind = kind
        self.settings = canonical(settings)
        self.fingerprint = fingerprint(self.settings)
        self.path = os.path.join(root, f"{kind}-{self.fingerprint}")

    def open(self, *, write: bool = True) -> ResultDir:
        """Creates the directory and ``settings.json`` (``write``), or checks an existing one."""
        settings_path = os.path.join(self.path, "settings.json")
        if os.path.exists(settings_path):
            with open(settings_path) as f:
                stored = json.load(f)
            if canonical(stored.get("settings")) != self.settings:
                raise RuntimeError(
                    f"{settings_path} holds other settings than its fingerprint "
                    f"{self.fingerprint} stands for; move {self.path} away."
                )
            return self
        if write:
            write_json_atomic(
                settings_path,
                {
                    "kind": self.kind,
                    "fingerprint": self.fingerprint,
                    "created_at": _now_text(),
                    "settings": self.settings,
                },
            )
        return self

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)


def write_report(directory: str, stem: str, report: Mapping) -> tuple[str, str]:
    """Writes ``report`` to ``reports/<stem>_<time>_<fingerprint>.json`` (kept) and
    ``latest_<stem>.json`` (replaced) in ``directory``; returns both paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fp = report.get("fingerprint") or fingerprint(report.get("settings", {}))
    kept = os.path.join(directory, "reports", f"{stem}_{stamp}_{fp}.json")
    n = 1
    while os.path.exists(kept):  # two reports within one second
        n += 1
        kept = os.path.join(directory, "reports", f"{stem}_{stamp}-{n}_{fp}.json")
    latest = os.path.join(directory, f"latest_{stem}.json")
    body = dict(report, report_path=kept, latest_path=latest)
    write_json_atomic(kept, body)
    write_json_atomic(latest, body)
    return kept, latest


def checkpoint_settings(restored, *, weights: str) -> dict:
    """Step, ``"ema"``/``"raw"`` and those weights' digest (a retrained step is told apart)."""
    part = "ema_params" if weights == "ema" else "params"
    return {"step": int(restored.step), "weights": weights, "digest": restored.weights_digest(part)}


def _retired_model_fields(name: str) -> dict:
    """``model.normalization``, gone from the configs (no network read it), stays in the
    fingerprints so results computed before are still found."""
    if name == "mlp":
        return {}
    ncsn = name.startswith("ncsn") and name != "ncsnpp"
    return {"normalization": "InstanceNorm++" if ncsn else "GroupNorm"}


def network_settings(config) -> dict:
    """The SDE, its discretization and the network (the fields that change the score)."""
    model = {k: v for k, v in config.model.items() if k not in _TRAINING_ONLY_MODEL_FIELDS}
    model = _retired_model_fields(str(model.get("name", ""))) | model
    return {
        "sde": str(config.training.sde).lower(),
        "continuous": bool(config.training.continuous),
        "model": model,
    }


def data_settings(config) -> dict:
    return {k: v for k, v in config.data.items() if k not in _TRAINING_ONLY_DATA_FIELDS}


def sampler_settings(config) -> dict:
    """Every field of ``config.sampling`` that the unconditional sampler reads (and, for the
    probability-flow ODE sampler, the adaptive solver's step rule when it is not the first)."""
    settings = {k: v for k, v in config.sampling.items() if k not in _NOT_SAMPLER_FIELDS}
    if settings.get("method") == "ode" and odeint.STEP_RULE != 1:
        settings["ode_step_rule"] = odeint.STEP_RULE
    return settings


def reuse_note(completed_at: float | None, what: str) -> dict:
    """The ``reused`` entry of a report: finished work taken from disk, and from when."""
    if completed_at is None:
        return {"reused": False}
    return {"reused": True, "completed_at": _now_text(completed_at), "what": what}


def file_time(path: str) -> float | None:
    with contextlib.suppress(OSError):
        return os.path.getmtime(path)
    return None
