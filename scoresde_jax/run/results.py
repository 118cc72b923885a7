"""Saved results keyed by the settings that determine them, and reports that keep their history.

Every partial or final result that evaluation writes (bits/dim batches, sample rounds, feature
statistics, reports) lives in a place named by a *fingerprint*: a hash of the settings that
change its numbers: the checkpoint (step and a digest of the weights used, EMA or raw), the SDE
and network, the sampler or the likelihood solver with all their fields, the data, the batch
size and number of devices where they change the random streams, the seed, and a version of the
metric's definition (:data:`METRIC_VERSIONS`). Work is reused only when the fingerprint matches
exactly, and a result of other settings gets a place of its own instead of overwriting one.
Settings that do not change numbers (progress bars, log frequencies, ``eval.num_samples`` for
one sample round, file paths of outputs) are not part of it.

Each result directory holds ``settings.json``, the settings in full, so that a fingerprint can
always be read back as what it stands for.
"""

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

__all__ = [
    "METRIC_VERSIONS",
    "canonical",
    "fingerprint",
    "json_ready",
    "ResultDir",
    "write_json_atomic",
    "write_report",
    "checkpoint_settings",
    "network_settings",
    "data_settings",
    "sampler_settings",
]

# Bump a version when the definition of a result changes (its numbers would differ for the
# same settings), so that results computed before are not reused under the new definition.
METRIC_VERSIONS = {
    "eval_loss": 1,
    "bpd": 1,
    "samples": 1,
    "sample_metrics": 1,
    "reference_stats": 1,
    "toy_eval": 1,
}

# Sampling fields of other modes (--mode sample, controllable tasks): they do not change the
# samples of --mode eval.
_NOT_SAMPLER_FIELDS = frozenset(
    {
        "batch_size",
        "task",
        "label",
        "task_inputs",
        "task_split",
        "num_inputs",
        "num_completions",
        "inpaint_mask",
        "perturb_known_init",
        "classifier_scale",
    }
)
# Network fields used only by training.
_TRAINING_ONLY_MODEL_FIELDS = frozenset({"ema_rate", "dropout"})
# Data fields used only by training (flips, the training loss's dequantization).
_TRAINING_ONLY_DATA_FIELDS = frozenset({"random_flip", "uniform_dequantization"})


def canonical(value: Any) -> Any:
    """``value`` as plain JSON types with a fixed order: dicts sorted, tuples as lists, numpy
    scalars as Python numbers, ConfigDicts as dicts."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, np.ndarray):
        return canonical(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def fingerprint(settings: Mapping) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of ``settings``."""
    text = json.dumps(canonical(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def json_ready(value: Any) -> Any:
    """A report value as strict JSON: numpy scalars and arrays as Python numbers and lists, and
    NaN / infinities as ``None`` (plain float64 everywhere else)."""
    value = canonical(value)
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
    """The directory ``<root>/<kind>-<fingerprint>`` of one result with its ``settings.json``.

    Args:
      root: where result directories of this kind live (e.g. ``eval/step_1000``).
      kind: what the result is (``"bpd_test"``, ``"samples"``, ...).
      settings: everything that determines the result (see the module docstring).
    """

    def __init__(self, root: str, kind: str, settings: Mapping):
        self.kind = kind
        self.settings = canonical(settings)
        self.fingerprint = fingerprint(self.settings)
        self.path = os.path.join(root, f"{kind}-{self.fingerprint}")

    def open(self, *, write: bool = True) -> ResultDir:
        """Creates the directory and its ``settings.json`` (``write``), or checks an existing
        one holds these very settings."""
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
            os.makedirs(self.path, exist_ok=True)
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
    """Writes ``report`` to ``<directory>/reports/<stem>_<time>_<fingerprint>.json`` (kept) and
    to ``<directory>/latest_<stem>.json`` (the newest report of ``stem``, replaced).

    Returns:
      ``(kept_path, latest_path)``.
    """
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


# -------------------------------------------------------------------------------------------
# The settings behind each kind of result (the run layer: these read configs).


def checkpoint_settings(restored, *, weights: str) -> dict:
    """Which weights: the checkpoint's step, ``"ema"`` or ``"raw"``, and their digest (so a
    checkpoint trained again under the same step is told apart)."""
    part = "ema_params" if weights == "ema" else "params"
    return {"step": int(restored.step), "weights": weights, "digest": restored.weights_digest(part)}


def _retired_model_fields(name: str) -> dict:
    """``model.normalization`` was set by every image config and read by no network; it is gone
    from the configs but stays in the fingerprints, so results computed before are still found."""
    if name == "mlp":
        return {}
    return {
        "normalization": "InstanceNorm++"
        if name.startswith("ncsn") and name != "ncsnpp"
        else "GroupNorm"
    }


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
    d = config.data
    return {k: v for k, v in d.items() if k not in _TRAINING_ONLY_DATA_FIELDS}


def sampler_settings(config) -> dict:
    """Every field of ``config.sampling`` that the unconditional sampler reads."""
    return {k: v for k, v in config.sampling.items() if k not in _NOT_SAMPLER_FIELDS}


def reuse_note(completed_at: float | None, what: str) -> dict:
    """The ``reused`` entry of a report: finished work taken from disk, and from when."""
    if completed_at is None:
        return {"reused": False}
    return {"reused": True, "completed_at": _now_text(completed_at), "what": what}


def file_time(path: str) -> float | None:
    with contextlib.suppress(OSError):
        return os.path.getmtime(path)
    return None
