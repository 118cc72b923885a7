"""The FID Inception weights: pytorch-fid's ``.pth`` (read without PyTorch) or an ``.npz``.

Flax paths mirror the PyTorch keys: ``Mixed_7c/branch3x3dbl_3b/conv/kernel`` is
``Mixed_7c.branch3x3dbl_3b.conv.weight`` (OIHW -> HWIO), batch-norm ``scale``/``bias`` are
``bn.weight``/``bn.bias`` and the ``batch_stats`` ``mean``/``var`` are
``bn.running_mean``/``bn.running_var``; ``fc/kernel`` is ``fc.weight`` transposed.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.io.state_dict import convert_state_dict, read_torch_state_dict
from scoresde_jax.metrics.inception.network import INCEPTION_SIZE, FIDInceptionV3

INCEPTION_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    + INCEPTION_WEIGHTS_NAME
)
# The file name carries the first 8 hex digits of its SHA-256 (torch.hub's convention, which
# pytorch-fid checks on download); the full digest below (95,628,359 bytes) starts with them.
# torch-fidelity distributes the same file as ``weights-inception-2015-12-05-6726825d.pth``.
INCEPTION_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_WEIGHTS_ENV = "SCORESDE_INCEPTION_WEIGHTS"
_OFFICIAL_NAMES = (INCEPTION_WEIGHTS_NAME, "weights-inception-2015-12-05-6726825d.pth")
_DEFAULT_CACHE = Path("~/.cache/scoresde_jax")


@functools.cache
def _abstract_variables() -> dict:
    image = jax.ShapeDtypeStruct((1, INCEPTION_SIZE, INCEPTION_SIZE, 3), jnp.float32)
    return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), image)


def _is_ignored(key: str) -> bool:
    # BN step counters are unused at inference; the auxiliary classifier is not part of FID.
    return key.endswith(".num_batches_tracked") or key.startswith("AuxLogits.")


def variables_from_state_dict(
    state_dict: Mapping[str, np.ndarray], *, source: str = "The state dict"
) -> dict[str, Any]:
    """``{"params", "batch_stats"}`` (float32 numpy) of :class:`FIDInceptionV3` from its state
    dict, whose keys must match but for ``*.num_batches_tracked`` and ``AuxLogits.*``."""
    return convert_state_dict(
        state_dict,
        _abstract_variables(),
        lambda path: ".".join(path[1:]),  # without the collection
        ignore=_is_ignored,
        model_name="FID Inception-v3",
        source=source,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_inception_params(path: str | os.PathLike, *, verify_sha256: bool = True) -> dict[str, Any]:
    """Variables of :class:`FIDInceptionV3` from a ``.pth`` or ``.npz`` of its state dict (cast
    to float32); files with the official name are checked against the SHA-256 first."""
    path = Path(path).expanduser()
    if path.suffix == ".npz":
        with np.load(path) as data:
            state_dict = {k: data[k] for k in data.files}
    else:
        if verify_sha256 and path.name in _OFFICIAL_NAMES:
            actual = _sha256(path)
            if actual != INCEPTION_WEIGHTS_SHA256:
                raise ValueError(
                    f"{path} has SHA-256 {actual}, but the official FID Inception weights have "
                    f"{INCEPTION_WEIGHTS_SHA256}; the file is damaged or a different one. "
                    f"Download it again from {INCEPTION_WEIGHTS_URL}"
                )
        state_dict = read_torch_state_dict(path)
    return variables_from_state_dict(state_dict, source=str(path))


def _display(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def find_inception_weights(
    path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Locates the FID Inception weights (nothing is ever downloaded): ``path``, else
    ``$SCORESDE_INCEPTION_WEIGHTS``, else ``<cache_dir>/pt_inception-2015-12-05-6726825d.pth``
    (default ``~/.cache/scoresde_jax``). Raises ``FileNotFoundError`` with the download command.
    """
    if path is not None:
        candidate, origin = Path(path).expanduser(), "the given path"
    elif os.environ.get(INCEPTION_WEIGHTS_ENV):
        candidate = Path(os.environ[INCEPTION_WEIGHTS_ENV]).expanduser()
        origin = f"${INCEPTION_WEIGHTS_ENV}"
    else:
        folder = Path(cache_dir if cache_dir is not None else _DEFAULT_CACHE).expanduser()
        candidate = folder / INCEPTION_WEIGHTS_NAME
        origin = "cache_dir" if cache_dir is not None else "the default cache"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"FID Inception weights not found at {candidate} ({origin}). Download them (95.6 MB) "
        f"with\n  curl -L --create-dirs -o {_display(candidate)} {INCEPTION_WEIGHTS_URL}\n"
        f"on a machine with internet access (then copy the file to this one), or point "
        f"${INCEPTION_WEIGHTS_ENV} at a copy."
    )
