"""Class-conditional sampling with a noise-conditional classifier (paper, Section 5).

Ground truth: for a Gaussian mixture the classifier ``p_t(y = k | x)`` is the closed-form
responsibility of component ``k`` under ``p_t``, and ``p_t(x | y = k)`` is component ``k``
perturbed by the SDE, so guided sampling with exact ingredients must draw from that component.
On MNIST a tiny classifier trains, resumes exactly, and drives ``--mode sample`` with task
``class`` end to end.
"""

import json
import math
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mixture_scores import isotropic_score_fn
from train_utils import leaves, override

from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.sde import get_sde
from scoresde_jax.models.classifier import count_params, get_classifier
from scoresde_jax.modes.classifier import (
    classifier_guided_score_fn,
    classifier_log_prob_fn,
    sample_class,
    train_classifier,
)
from scoresde_jax.sampling import ode_sample, pc_sample

WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
STDS = np.array([0.6, 0.8, 0.5])
SDES = {
    "vesde": dict(sigma_min=0.01, sigma_max=50.0),
    "vpsde": dict(beta_min=0.1, beta_max=20.0),
    "subvpsde": dict(beta_min=0.1, beta_max=20.0),
}


def log_responsibilities(sde):
    """Exact ``log p_t(y = k | x)`` ``[B, K]`` of the isotropic mixture under ``sde``."""
    log_w = jnp.log(jnp.asarray(WEIGHTS, jnp.float32))
    means = jnp.asarray(MEANS, jnp.float32)
    var0 = jnp.asarray(STDS, jnp.float32) ** 2

    def log_prob_fn(x, t):
        a, sig = sde.marginal_coeffs(t)
        var = a[:, None] ** 2 * var0[None, :] + sig[:, None] ** 2
        diff = a[:, None, None] * means[None] - x[:, None, :]
        logits = log_w[None] - 0.5 * jnp.sum(diff**2, -1) / var - 0.5 * x.shape[1] * jnp.log(var)
        return jax.nn.log_softmax(logits, axis=-1)

    return log_prob_fn


def component_score(sde, k, x, t):
    a, sig = sde.marginal_coeffs(t)
    var = a**2 * STDS[k] ** 2 + sig**2
    return (a[:, None] * jnp.asarray(MEANS[k], jnp.float32)[None] - x) / var[:, None]


@pytest.mark.parametrize("name", sorted(SDES))
def test_guided_score_is_the_component_score(name):
    """score(x, t) + grad log p_t(k | x) = grad log N(x; a mu_k, (a^2 s_k^2 + sig^2) I)."""
    sde = get_sde(name, **SDES[name])
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 2)) * 4.0
    t = jax.random.uniform(jax.random.PRNGKey(1), (64,), minval=0.01, maxval=1.0)
    log_prob = log_responsibilities(sde)
    score = isotropic_score_fn(sde, WEIGHTS, MEANS, STDS)
    gmm = GaussianMixture.isotropic(WEIGHTS, MEANS, STDS)
    labels = jnp.arange(64) % 3

    @jax.jit
    def compute(x, t):
        a, sig = sde.marginal_coeffs(t)
        guided = [classifier_guided_score_fn(score, log_prob, k)(x, t) for k in range(3)]
        # Per-example labels, and a scale that multiplies the classifier's gradient only.
        scaled = classifier_guided_score_fn(score, log_prob, labels, scale=2.0)(x, t)
        return {
            "helper": jnp.exp(log_prob(x, t)),
            "posterior": gmm.responsibilities(x, a, sig),
            "guided": jnp.stack(guided),
            "scaled": scaled,
            "score": score(x, t),
            "component": jnp.stack([component_score(sde, k, x, t) for k in range(3)]),
        }

    r = jax.device_get(compute(x, t))
    # The helper is the mixture's own posterior.
    np.testing.assert_allclose(r["helper"], r["posterior"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r["guided"], r["component"], rtol=2e-4, atol=2e-4)
    want = r["component"][np.asarray(labels), np.arange(64)]
    np.testing.assert_allclose(r["scaled"], 2 * want - r["score"], rtol=5e-4, atol=5e-4)


@pytest.mark.parametrize("method", ["pc", "ode"])
@pytest.mark.parametrize("name", sorted(SDES))
def test_guided_sampling_draws_the_requested_component(name, method):
    sde = get_sde(name, **SDES[name])
    k, n = 2, 2000  # the rarest component (weight 0.2)
    guided = classifier_guided_score_fn(
        isotropic_score_fn(sde, WEIGHTS, MEANS, STDS), log_responsibilities(sde), k
    )
    eps = 1e-5 if name == "vesde" else 1e-3
    key = jax.random.PRNGKey(7)
    if method == "pc":
        run = jax.jit(
            lambda key: (
                pc_sample(
                    sde,
                    guided,
                    key,
                    (n, 2),
                    predictor="reverse_diffusion",
                    corrector="none",
                    eps=eps,
                    num_steps=400,
                ).x
            )
        )
    else:
        run = jax.jit(lambda key: ode_sample(sde, guided, key, (n, 2), eps=eps).x)
    x = np.asarray(run(key))
    gmm = GaussianMixture.isotropic(WEIGHTS, MEANS, STDS)
    frac = float(np.mean(np.asarray(gmm.responsibilities(jnp.asarray(x))).argmax(-1) == k))
    assert frac >= 0.98, frac
    se = STDS[k] / math.sqrt(n)
    np.testing.assert_allclose(x.mean(0), MEANS[k], atol=5 * se + 0.02)
    cov = np.cov(x, rowvar=False)
    np.testing.assert_allclose(cov, STDS[k] ** 2 * np.eye(2), atol=0.15 * STDS[k] ** 2)


# ----------------------------------------------------------------------------------------------
# Networks.


def _wrn_param_count(depth, k, c_in, num_classes, embed):
    """Parameters of the noise-conditional WRN, counted by hand from its definition."""
    n = (depth - 4) // 6
    total = embed // 2 + 2 * (embed * embed + embed)  # Fourier W, two dense layers
    total += 9 * c_in * 16  # stem, no bias
    c = 16
    for group, width in enumerate((16 * k, 32 * k, 64 * k)):
        for block in range(n):
            stride = 2 if group > 0 and block == 0 else 1
            total += 2 * c  # GroupNorm
            total += c * width if (c != width or stride != 1) else 0  # 1x1 shortcut
            total += 9 * c * width + embed * width + width  # conv1, embedding projection
            total += 2 * width + 9 * width * width  # GroupNorm, conv2
            c = width
    return total + 2 * c + c * num_classes + num_classes


def test_wide_resnet_shapes_and_parameter_count():
    model = get_classifier("wide_resnet", depth=10, widen_factor=2, embed_dim=16, num_classes=7)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 3))
    assert jax.eval_shape(model.init_with_output, jax.random.PRNGKey(1), x, jnp.ones((3,)))[
        0
    ].shape == (3, 7)
    assert count_params(model, (16, 16, 3)) == _wrn_param_count(10, 2, 3, 7, 16)
    # The paper's WRN-28-10 (traced only, never run).
    full = get_classifier("wide_resnet", depth=28, widen_factor=10, embed_dim=128)
    assert count_params(full, (32, 32, 3)) == _wrn_param_count(28, 10, 3, 10, 128) == 37_090_202
    with pytest.raises(ValueError, match="6 n \\+ 4"):
        get_classifier("wide_resnet", depth=12).init(jax.random.PRNGKey(0), x, jnp.ones((3,)))
    with pytest.raises(ValueError, match="small_cnn"):
        get_classifier("resnet50")


@pytest.mark.parametrize("name", ["wide_resnet", "small_cnn"])
def test_classifier_conditions_on_the_noise_level(name):
    kw = dict(depth=10, widen_factor=1) if name == "wide_resnet" else dict(channels=(4, 8))
    model = get_classifier(name, embed_dim=16, **kw)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 12, 12, 1))
    params = jax.jit(model.init)(jax.random.PRNGKey(1), x, jnp.ones((4,)))

    logits = jax.jit(lambda level: model.apply(params, x, level))
    low, high = logits(jnp.full((4,), 0.01)), logits(jnp.full((4,), 10.0))
    assert np.all(np.isfinite(low)) and float(jnp.max(jnp.abs(low - high))) > 1e-3


# ----------------------------------------------------------------------------------------------
# MNIST, end to end.

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SCORESDE_SHARED", ROOT.parent / "shared"))
MNIST = SHARED / "data" / "mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason=f"MNIST IDX files not found in {MNIST} (set SCORESDE_SHARED)",
)


def tiny_config(**overrides):
    from configs.mnist.ddpmpp_vp import get_config

    config = get_config()
    m = config.model
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.dropout = 4, (1,), 1, (), 0.0
    t = config.training
    t.snapshot_sampling, t.progress_bar = False, False
    config.data.path = str(MNIST)
    c = config.classifier
    c.channels, c.embed_dim, c.batch_size, c.n_iters, c.warmup = (4, 8), 16, 16, 4, 2
    c.log_freq, c.eval_freq, c.snapshot_freq, c.eval_examples = 2, 0, 2, 24
    c.eval_times = "0.0,0.5"
    s = config.sampling
    s.num_steps, s.batch_size, s.task, s.label = 4, 8, "class", 3
    return override(config, overrides)


@pytest.fixture(scope="module")
def score_workdir(tmp_path_factory):
    """A score checkpoint of a tiny network (its freshly initialized state: training score
    networks is tested in test_image_e2e.py, and the compile of a training step would double
    this file's time)."""
    from scoresde_jax.run.checkpoint import Checkpointer
    from scoresde_jax.run.experiment import build_experiment

    workdir = tmp_path_factory.mktemp("mnist_class")
    ckpt = Checkpointer(str(workdir))
    ckpt.save(build_experiment(tiny_config()).init_state())
    ckpt.wait()
    ckpt.close()
    return workdir


@needs_mnist
@pytest.mark.slow
def test_mnist_classifier_trains_resumes_and_samples_a_class(score_workdir, tmp_path):
    workdir = str(score_workdir)
    straight = train_classifier(tiny_config(), workdir)
    clf_dir = score_workdir / "classifier"
    assert straight["step"] == 4 and np.isfinite(straight["loss"])
    assert set(straight["test_accuracy"]) == {"0.0", "0.5"} and straight["test_examples"] == 24
    assert all(0.0 <= a <= 1.0 for a in straight["test_accuracy"].values())
    assert sorted(os.listdir(clf_dir / "checkpoints")) == ["2", "4"]
    rows = [json.loads(r) for r in (clf_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]
    assert all(np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 for r in rows if "loss" in r)

    # Resuming from step 2 continues the same stream: the parameters of four straight steps.
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(clf_dir / "checkpoints" / "2", resumed_dir / "checkpoints" / "2")
    resumed = train_classifier(tiny_config(**{"classifier.workdir": str(resumed_dir)}), workdir)
    assert resumed["step"] == 4
    from scoresde_jax.modes.classifier import _Setup
    from scoresde_jax.run.checkpoint import Checkpointer

    setup = _Setup(tiny_config())
    restore = lambda d: Checkpointer(str(d), read_only=True).restore(setup.abstract_target())
    a, b = restore(clf_dir), restore(resumed_dir)
    for u, v in zip(leaves(a.params), leaves(b.params), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)

    # Finite, non-zero input gradients of log p_t(y | x), the quantity the sampler uses.
    log_prob = classifier_log_prob_fn(setup.sde, setup.model, a.ema_params)

    def selected(x, t):
        return jnp.sum(log_prob(x, jnp.full((4,), t))[:, 3])

    times = (1e-3, 0.5, 1.0)
    grads = jax.jit(lambda x: jnp.stack([jax.grad(selected)(x, t) for t in times]))
    g = np.asarray(grads(jax.random.normal(jax.random.PRNGKey(0), (4, 28, 28, 1))))
    assert np.all(np.isfinite(g)) and np.all(np.abs(g).reshape(len(times), -1).max(1) > 0)

    # The sampling CLI with task "class", through the task table of --mode sample.
    from scoresde_jax.cli import sample

    out = sample(tiny_config(), workdir)
    assert out["label"] == 3 and out["step"] == 0 and out["classifier_step"] == 4
    assert out["png"].endswith("class_3_step_0.png") and os.path.getsize(out["png"]) > 100
    images = np.load(out["npz"])["samples"]
    assert images.dtype == np.uint8 and images.shape == (8, 28, 28, 1)
    assert 0.0 <= out["label_accuracy"] <= 1.0 and sum(out["predicted_label_counts"]) == 8

    with pytest.raises(ValueError, match="sampling.label"):
        sample_class(tiny_config(**{"sampling.label": None}), workdir)
    with pytest.raises(ValueError, match="out of range"):
        sample_class(tiny_config(**{"sampling.label": 10}), workdir)
    with pytest.raises(FileNotFoundError, match="train_classifier"):
        sample_class(tiny_config(**{"classifier.workdir": str(tmp_path / "none")}), workdir)


def test_toy_configs_are_refused_with_a_clear_error(tmp_path):
    from configs.toy.gmm import get_config

    config = override(get_config(), {"sampling.task": "class", "sampling.label": 1})
    for run in (sample_class, train_classifier):
        with pytest.raises(ValueError, match="labelled images"):
            run(config, str(tmp_path))
