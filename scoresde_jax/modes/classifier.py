"""Class-conditional sampling with a noise-conditional classifier (paper, Section 5, Eq. 14, and
Appendix I.1): ``--mode train_classifier`` and ``--mode sample --config.sampling.task=class``.

``grad_x log p_t(x | y) = grad_x log p_t(x) + grad_x log p_t(y | x)`` (Bayes), so any sampler of a
``score_fn(x, t)`` samples ``p_0(x | y)`` given the sum. The classifier ``p_t(y | x(t))`` learns
cross-entropy on training images perturbed by the SDE at ``t ~ U(eps, T)``; ``scale != 1``
multiplies its gradient (``scale > 1`` sharpens the class, as in later "classifier guidance").
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from scoresde_jax.core.guidance import LogProbFn, classifier_guided_score_fn
from scoresde_jax.core.mesh import device_count, make_data_mesh, replicated, to_global_array
from scoresde_jax.core.sde import SDE, batch_mul
from scoresde_jax.data import eval_batches, to_model_space, train_batch
from scoresde_jax.io import images as plotting
from scoresde_jax.io.images import to_uint8
from scoresde_jax.metrics.feature_net import (
    classifier_for_dataset,
    evaluate_accuracy,
    feature_fn,
    load_classifier,
)
from scoresde_jax.models.classifier import get_classifier
from scoresde_jax.run import draw, experiment, workdir_lock
from scoresde_jax.run.checkpoint import Checkpointer
from scoresde_jax.run.experiment import (
    ReplicatedState,
    check_workdir,
    data_shape,
    restore_experiment,
    to_host,
)
from scoresde_jax.run.state import TrainState, apply_gradients, make_optimizer
from scoresde_jax.run.trainer import Job, fit, train_batch_options

log = logging.getLogger(__name__)


def perturb(sde: SDE, x: jax.Array, t: jax.Array, key: jax.Array) -> jax.Array:
    """A sample of ``x(t) | x(0) = x`` under ``sde``: ``alpha_t x + sigma_t z``, ``z ~ N(0, I)``."""
    mean, std = sde.marginal_prob(x, t)
    return mean + batch_mul(std, jax.random.normal(key, x.shape, x.dtype))


def classifier_inputs(sde: SDE, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(x / sqrt(alpha_t^2 + sigma_t^2), sigma_t / alpha_t)``: inputs of about unit scale for
    every SDE, and the noise level of ``x(t) / alpha_t = x(0) + (sigma_t / alpha_t) z`` (VE's
    ``sigma``), so one classifier design serves all SDEs."""
    alpha, sigma = sde.marginal_coeffs(t)
    return batch_mul(jax.lax.rsqrt(alpha**2 + sigma**2), x), sigma / alpha


def classifier_log_prob_fn(sde: SDE, model: nn.Module, params) -> LogProbFn:
    """``log_prob_fn(x, t) -> log_softmax(logits)`` of a noise-conditional classifier."""

    def log_prob_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        x_in, level = classifier_inputs(sde, x, t)
        return jax.nn.log_softmax(model.apply(params, x_in, level, train=False), axis=-1)

    return log_prob_fn


def make_classifier_train_step(
    *,
    model: nn.Module,
    sde: SDE,
    optimizer: optax.GradientTransformation,
    ema_rate: float,
    seed_key: jax.Array,
    eps: float = 1e-5,
) -> Callable:
    """``step(state, x, labels) -> (state, metrics)``: cross-entropy on ``x`` perturbed at ``t ~
    U(eps, T)``; the randomness of step ``s`` comes from ``fold_in(seed_key, s)`` (resumable)."""

    def step(state: TrainState, x: jax.Array, labels: jax.Array):
        key = jax.random.fold_in(seed_key, state.step)
        t_key, z_key, dropout_key = jax.random.split(key, 3)
        t = jax.random.uniform(t_key, (x.shape[0],), minval=eps, maxval=sde.T)
        x_in, level = classifier_inputs(sde, perturb(sde, x, t, z_key), t)

        def objective(params):
            logits = model.apply(params, x_in, level, train=True, rngs={"dropout": dropout_key})
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)  # on the perturbed batch
        metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads)}
        return apply_gradients(state, grads, optimizer, ema_rate), metrics

    return step


def classifier_from_config(config) -> nn.Module:
    """The network of ``config.classifier`` with ``config.data.num_classes`` outputs."""
    c = config.classifier
    common = dict(
        num_classes=config.data.num_classes, embed_dim=c.embed_dim, fourier_scale=c.fourier_scale
    )
    if c.name == "wide_resnet":
        return get_classifier(
            "wide_resnet", depth=c.depth, widen_factor=c.widen_factor, dropout=c.dropout, **common
        )
    if c.name == "small_cnn":
        return get_classifier("small_cnn", channels=tuple(c.channels), **common)
    raise ValueError(
        f"Unknown config.classifier.name={c.name!r}; use 'wide_resnet' or 'small_cnn'."
    )


def _check_image_config(config) -> None:
    if config.data.get("dataset_kind", "image") != "image" or "classifier" not in config:
        raise ValueError(
            "Noise-conditional classifiers and sampling.task='class' need labelled images and a "
            f"config.classifier section; config.data.dataset={config.data.dataset!r} "
            f"(dataset_kind={config.data.get('dataset_kind', 'image')!r}) is not supported."
        )


class _Setup(ReplicatedState):
    """Network, optimizer, SDE, mesh and abstract (sharded) state of ``config.classifier``."""

    def __init__(self, config, mesh=None):
        _check_image_config(config)
        c = config.classifier
        self.sde = experiment.sde_from_config(config)
        self.model = classifier_from_config(config)
        self.optimizer = make_optimizer(
            lr=c.lr,
            warmup=c.warmup,
            grad_clip=c.grad_clip,
            weight_decay=c.weight_decay,
            optimizer=c.optimizer,
        )
        self.mesh = mesh if mesh is not None else make_data_mesh(config.get("num_devices", None))
        self.data_shape = data_shape(config)
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0xC1A55)
        self.init_key, self.train_key, self.eval_key = jax.random.split(key, 3)
        self._setup_state()


def _classifier_dir(config, workdir: str) -> str:
    section = config.get("classifier", None)
    explicit = section.get("workdir", None) if section else None
    return explicit or os.path.join(workdir, "classifier")


def _eval_times(config) -> list[float]:
    text = str(config.classifier.eval_times)
    try:
        times = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        times = []
    if not times or any(not 0.0 <= t <= 1.0 for t in times):
        raise ValueError(
            f"config.classifier.eval_times={text!r}: use comma-separated times in [0, 1] (in "
            "units of the SDE's T), e.g. '0.01,0.25,0.5'."
        )
    return times


def train_classifier(config, workdir: str) -> dict:
    """``--mode train_classifier`` (resumable, in ``classifier.workdir`` or ``workdir/classifier``);
    the EMA parameters are scored every ``eval_freq`` steps at each of ``eval_times``."""
    check_workdir(workdir)
    out_dir = _classifier_dir(config, workdir)
    os.makedirs(out_dir, exist_ok=True)
    with workdir_lock.hold(out_dir, "classifier", mode="train_classifier") as lock:
        return _train_classifier(config, out_dir, lock)


def _train_classifier(config, out_dir: str, lock) -> dict:
    setup = _Setup(config)
    c, d = config.classifier, config.data
    eval_times = _eval_times(config)
    n_dev = device_count(setup.mesh)
    pindex, pcount = jax.process_index(), jax.process_count()
    if c.batch_size % (n_dev * pcount):
        raise ValueError(
            f"classifier.batch_size={c.batch_size} is not divisible by the {n_dev} devices; use "
            f"a multiple of {n_dev}."
        )
    source = experiment.image_source_from_config(d, "train")
    test_source = experiment.image_source_from_config(d, "test")
    for name, src in (("train", source), ("test", test_source)):
        if getattr(src, "num_classes", None) is None:
            raise ValueError(
                f"The {name} split of {d.dataset} ({getattr(src, 'name', type(src).__name__)}) "
                "has no labels; a classifier needs a labelled source (MNIST IDX files, an npz "
                "with '<split>_labels', CIFAR-10 python batches, TFDS or class folders)."
            )
    batch = setup.batch_sharding()
    step_fn = jax.jit(
        make_classifier_train_step(
            model=setup.model,
            sde=setup.sde,
            optimizer=setup.optimizer,
            ema_rate=c.ema_rate,
            seed_key=setup.train_key,
            eps=c.eps,
        ),
        in_shardings=(setup.state_sharding, batch, batch),
        out_shardings=(setup.state_sharding, replicated(setup.mesh)),
        donate_argnums=0,
    )
    accuracy_at = _make_evaluator(config, setup, test_source, eval_times)
    prep = dict(train_batch_options(config, c.batch_size), seed=config.seed, return_labels=True)

    def step(state, step: int):
        x, labels = train_batch(source, step, **prep)
        return step_fn(state, to_global_array(x, setup.mesh), to_global_array(labels, setup.mesh))

    accuracy: dict = {}

    def evaluate(state, step: int) -> dict:
        accuracy.update(accuracy_at(state.ema_params))
        if pindex == 0:
            scores = ", ".join(f"t={t}: {a:.3f}" for t, a in accuracy.items())
            log.info("classifier step %d held-out accuracy (EMA) %s", step, scores)
        return {f"test_accuracy_t{t}": a for t, a in accuracy.items()}

    job = Job(
        name="classifier",
        n_iters=c.n_iters,
        init_state=setup.init_state,
        abstract_target=setup.abstract_target,
        step=step,
        log_freq=c.log_freq,
        snapshot_freq=c.snapshot_freq,
        eval_freq=c.eval_freq,
        evaluate=evaluate,
        eval_at_end=True,
        batch_size=c.batch_size,
        progress=config.training.get("progress_bar", True),
        advice="lower classifier.lr.",
    )
    done = fit(job, out_dir, lock=lock)
    if not accuracy:  # nothing left to train: score the restored state
        accuracy = accuracy_at(done.state.ema_params)
    ran = done.step - done.start
    return {
        "checkpoint_dir": done.checkpoint_dir,
        "num_params": sum(math.prod(a.shape) for a in jax.tree.leaves(setup.abstract_state.params)),
        "step": done.step,
        "loss": done.scalars.get("loss"),
        "train_accuracy": done.scalars.get("accuracy"),
        "test_accuracy": {str(t): a for t, a in accuracy.items()},
        "test_examples": min(len(test_source), c.eval_examples),
        "seconds": done.seconds,
        "steps_per_s": ran / done.seconds if ran else None,
    }


def _make_evaluator(config, setup: _Setup, test_source, eval_times: list[float]):
    """``evaluate(params) -> {t: accuracy}`` on the first ``classifier.eval_examples`` test
    images, perturbed with fixed noise (comparable across steps)."""
    c, d, sde = config.classifier, config.data, setup.sde

    def correct(params, x, labels, t, key):
        tt = jnp.full((x.shape[0],), jnp.maximum(t, c.eps))
        x_in, level = classifier_inputs(sde, perturb(sde, x, tt, key), tt)
        logits = setup.model.apply(params, x_in, level, train=False)
        return jnp.argmax(logits, -1) == labels

    batch = setup.batch_sharding()
    rep = replicated(setup.mesh)
    jitted = jax.jit(correct, in_shardings=(rep, batch, batch, rep, rep), out_shardings=batch)

    def evaluate(params) -> dict[float, float]:
        hits, total = dict.fromkeys(eval_times, 0), 0
        it = eval_batches(  # classifier.batch_size is a multiple of the device count
            test_source,
            global_batch_size=c.batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            max_examples=c.eval_examples,
        )
        for i, (images, labels, mask) in enumerate(it):
            x = to_global_array(to_model_space(images, centered=d.centered), setup.mesh)
            y = to_global_array(labels.astype(np.int32), setup.mesh)
            keep = to_host(to_global_array(mask, setup.mesh))
            total += int(keep.sum())
            for j, t in enumerate(eval_times):
                key = jax.random.fold_in(jax.random.fold_in(setup.eval_key, i), j)
                ok = to_host(jitted(params, x, y, jnp.float32(t * sde.T), key))
                hits[t] += int(ok[keep].sum())
        return {t: hits[t] / max(total, 1) for t in eval_times}

    return evaluate


def _requested_label(config) -> int:
    label = config.sampling.get("label", None)
    n = config.data.get("num_classes", None)
    if label is None:
        raise ValueError(
            "sampling.task='class' needs the class to sample: pass --config.sampling.label=K "
            f"with 0 <= K < {n if n else 'data.num_classes'}."
        )
    if n is not None and not 0 <= int(label) < int(n):
        raise ValueError(
            f"config.sampling.label={label} is out of range for {config.data.dataset} with "
            f"{n} classes; use 0 <= label < {n}."
        )
    return int(label)


def sample_class(config, workdir: str) -> dict:
    """``--mode sample --config.sampling.task=class``: samples of ``sampling.label`` from the noise
    of ``--mode sample``. For MNIST a clean-image classifier scores them (``label_accuracy``) and,
    with ``classifier.compare_unconditional``, unconditional ones from the same noise (~0.1)."""
    _check_image_config(config)
    label = _requested_label(config)
    exp, state, step = restore_experiment(config, workdir)
    setup = _Setup(config, mesh=exp.mesh)
    clf_dir = _classifier_dir(config, workdir)
    if not os.path.isdir(os.path.join(clf_dir, "checkpoints")):
        raise FileNotFoundError(
            f"No classifier checkpoints in {clf_dir}/checkpoints. Train one first with "
            "--mode train_classifier (same --config and --workdir), or point "
            "--config.classifier.workdir at a directory that holds classifier/checkpoints."
        )
    clf_state = Checkpointer(clf_dir, read_only=True).restore(setup.abstract_target())
    clf_step = int(jax.device_get(clf_state.step))
    scale = float(config.sampling.get("classifier_scale", 1.0))

    def make_score_fn(params):
        score_params, clf_params = params
        log_prob_fn = classifier_log_prob_fn(exp.sde, setup.model, clf_params)
        return classifier_guided_score_fn(exp.score_fn(score_params), log_prob_fn, label, scale)

    run, n, key = draw.sample_batch(config, exp, step, make_score_fn)
    t0 = time.perf_counter()
    x, nfe = run((state.ema_params, clf_state.ema_params), key)
    images = to_uint8(to_host(x), centered=config.data.centered)
    seconds = time.perf_counter() - t0
    out = {
        "task": "class",
        "label": label,
        "classifier_scale": scale,
        "sampler": config.sampling.method,
        "step": step,
        "classifier_step": clf_step,
        "num_samples": n,
        "nfe": int(nfe),
        "sampling_seconds": seconds,
    }

    d = config.data
    judge_name = classifier_for_dataset(str(d.dataset), d.image_size, d.num_channels)
    if judge_name == "mnist":
        judge = load_classifier(judge_name)
        _, logits = feature_fn(judge, with_logits=True)(images)
        predicted = np.argmax(logits, -1)
        out["label_accuracy"] = float(np.mean(predicted == label))
        out["predicted_label_counts"] = np.bincount(predicted, minlength=10).tolist()
        out["judge"] = "scoresde_jax.metrics.feature_net 'mnist' (clean images)"
        if config.classifier.get("compare_unconditional", False):
            plain, _, _ = draw.sample_batch(config, exp, step)
            t1 = time.perf_counter()
            xu, _ = plain(state.ema_params, key)
            uncond = to_uint8(to_host(xu), centered=d.centered)
            out["unconditional_seconds"] = time.perf_counter() - t1
            out["unconditional_label_fraction"] = evaluate_accuracy(
                judge, uncond, np.full(len(uncond), label)
            )
    if jax.process_index() != 0:
        return out
    sample_dir = os.path.join(workdir, "samples")
    os.makedirs(sample_dir, exist_ok=True)
    stem = os.path.join(sample_dir, f"class_{label}_step_{step}")
    png = plotting.save_image_grid(stem + ".png", images)
    np.savez(stem + ".npz", samples=images, label=np.int32(label), classifier_scale=scale)
    return out | {"png": png, "npz": stem + ".npz"}
