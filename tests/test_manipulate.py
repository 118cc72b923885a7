"""``--mode encode | interpolate | temperature`` on real images (MNIST from the original IDX
files), a few inputs spread over two devices.

The checkpoint is a freshly initialized tiny DDPM++: its last layers start at (almost) zero, so
its score is zero to ~1e-8 and the VP probability flow is the linear contraction
``dx/dt = -beta(t) x / 2``. Every output then has a closed form: the latent of ``x`` is
``c x`` with ``c = exp(-(B(T) - B(eps)) / 2)``, the decoded interpolants are the great circle
between the two inputs themselves (slerp commutes with scaling), and temperature ``tau`` decodes
``tau z / c``. This checks the sharded, padded image path of each mode against those exactly.
"""

import math
import os
import pathlib

import numpy as np
import pytest
from train_utils import override

from configs.mnist.ddpmpp_vp import get_config
from scoresde_jax.modes import latent as manipulate
from scoresde_jax.run.checkpoint import Checkpointer
from scoresde_jax.run.experiment import build_experiment
from scoresde_jax.sampling.latent import slerp

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SCORESDE_SHARED", ROOT.parent / "shared"))
MNIST = SHARED / "data" / "mnist"

needs_mnist = pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"MNIST IDX files not found in {MNIST} (set SCORESDE_SHARED)",
)


def tiny_config():
    return override(
        get_config(),
        {
            "model.nf": 8,
            "model.ch_mult": (1,),
            "model.num_res_blocks": 1,
            "model.attn_resolutions": (),
            "model.dropout": 0.0,
            "data.path": str(MNIST),
            # Two of the 8 test devices: 3 inputs are padded to 4, and little work is wasted.
            "num_devices": 2,
            "latent.num_inputs": 3,
            "latent.num_pairs": 2,
            "latent.num_interpolation_steps": 3,
            "latent.temperatures": "0,0.5,1",
            "latent.rtol": 1e-4,  # the round trip below is checked to 1e-3
            "latent.atol": 1e-6,
        },
    )


@needs_mnist
@pytest.mark.slow
def test_latent_modes_on_mnist(tmp_path):
    config = tiny_config()
    exp = build_experiment(config)
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(exp.init_state())
    ckpt.close()
    sde, eps = exp.sde, config.sampling.eps
    c = math.exp(-0.5 * (sde.integrated_beta(sde.T) - sde.integrated_beta(eps)))

    report = manipulate.encode_mode(config, str(tmp_path))
    assert report["step"] == 0 and report["failed_solves"] == 0
    saved = np.load(report["npz"])
    x, z = saved["x"], saved["z"]
    assert x.shape == z.shape == saved["x_rec"].shape == (3, 28, 28, 1)
    assert x.min() == -1.0 and x.max() == 1.0  # test digits in [-1, 1]
    np.testing.assert_allclose(z, c * x, atol=1e-2 * c)  # a few rtol over the whole solve
    np.testing.assert_allclose(saved["x_rec"], x, atol=1e-3)
    assert report["max_abs_error"] < 1e-3 and report["changed_pixel_fraction"] < 0.01, report
    png = pathlib.Path(report["png"])
    assert png.parent == tmp_path / "latent" and png.stat().st_size > 1_000

    report = manipulate.interpolate_mode(config, str(tmp_path))
    saved = np.load(report["npz"])
    path, x0, x1 = saved["interpolants"], saved["x0"], saved["x1"]
    assert path.shape == (2, 3, 28, 28, 1) and not np.array_equal(x0, x1)
    for k, alpha in enumerate((0.0, 0.5, 1.0)):
        np.testing.assert_allclose(path[:, k], slerp(x0, x1, alpha), atol=1e-2)
    np.testing.assert_allclose(saved["latents"], c * path, atol=1e-2 * c)
    assert pathlib.Path(report["png"]).stat().st_size > 1_000

    report = manipulate.temperature_mode(config, str(tmp_path))
    assert report["temperatures"] == [0.0, 0.5, 1.0]
    samples = np.load(report["npz"])["samples"]
    assert samples.shape == (3, 3, 28, 28, 1)
    # The same base noise in every row, scaled by tau and decoded by the linear flow.
    np.testing.assert_allclose(samples[0], 0.0, atol=1e-4)
    scale = np.abs(samples[2]).max()  # about 4 / c: prior noise brought back by the flow
    np.testing.assert_allclose(samples[1], 0.5 * samples[2], atol=1e-3 * scale)
    assert abs(float(np.std(c * samples[2])) - 1) < 0.05  # the prior's unit variance
    assert pathlib.Path(report["png"]).stat().st_size > 1_000
