"""Evaluation: checkpoint -> likelihood and samples -> JSON report (and pictures)."""

from __future__ import annotations

import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scoresde_jax import builders, plotting
from scoresde_jax.checkpoint import Checkpointer
from scoresde_jax.data import TOY_GMM, make_toy_dataset, toy_density
from scoresde_jax.likelihood import log_likelihood
from scoresde_jax.train import build_experiment

__all__ = ["evaluate", "gaussian_nll", "sample", "to_uint8"]

log = logging.getLogger(__name__)


def gaussian_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Mean test NLL (nats) of a single Gaussian fitted by maximum likelihood to ``train``."""
    mu = train.mean(0)
    cov = np.cov(train.astype(np.float64), rowvar=False, bias=True)
    d = test.astype(np.float64) - mu
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    return float(np.mean(0.5 * (maha + logdet + train.shape[1] * math.log(2 * math.pi))))


def _restore_latest(config, workdir: str):
    """``(experiment, state, step)`` of the latest checkpoint in ``workdir``."""
    exp = build_experiment(config)
    state = Checkpointer(workdir, read_only=True).restore(exp.abstract_target())
    return exp, state, int(jax.device_get(state.step))


def evaluate(config, workdir: str) -> dict:
    """Evaluates the latest checkpoint in ``workdir``, writes ``workdir/eval/``, returns a report.

    For the toy configs: the test NLL (nats per example, exact-trace probability-flow likelihood of
    the EMA model), the NLL of a single fitted Gaussian and of the true density where known, and a
    scatter plot of ``config.eval.num_samples`` samples next to the test data.
    """
    exp, state, step = _restore_latest(config, workdir)
    ec = config.eval
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)

    if config.data.dataset_kind != "toy":
        raise NotImplementedError("only the toy configs are evaluated so far")
    name = config.data.dataset
    train_data = make_toy_dataset(name, config.data.n_train, config.data.seed)
    test_data = make_toy_dataset(name, config.data.n_test, config.data.seed + 1)

    @jax.jit
    def nll_batch(params, x, key):
        res = log_likelihood(
            exp.sde,
            exp.score_fn(params),
            x,
            key,
            exact_trace=ec.exact_trace,
            num_probes=ec.num_probes,
            rtol=ec.rtol,
            atol=ec.atol,
            solver=ec.ode_solver,
        )
        return -res.logp, res.nfe

    nlls, nfes = [], []
    bs = ec.batch_size
    for i in tqdm(range(0, len(test_data), bs), desc="test NLL", unit="batch", leave=False):
        x = test_data[i : i + bs]
        pad = bs - len(x)
        # Pad the last batch to the compiled shape and drop the padding afterwards.
        xb = np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x
        nll, nfe = nll_batch(state.ema_params, jnp.asarray(xb), jax.random.fold_in(exp.eval_key, i))
        nlls.append(np.asarray(nll)[: len(x)])
        nfes.append(int(nfe))
    nll = np.concatenate(nlls)

    sample_fn = builders.sampler_from_config(config.sampling, exp.sde)
    sample = jax.jit(lambda params, key: sample_fn(exp.score_fn(params), key, (ec.num_samples, 2)))
    res = sample(state.ema_params, jax.random.fold_in(exp.eval_key, 10**6 + step))
    samples = np.asarray(res.x)
    png = plotting.scatter_samples(
        os.path.join(out_dir, f"samples_step_{step}.png"),
        data=test_data[: ec.num_samples],
        samples=samples,
        title=f"{name}: {config.training.sde}, step {step}, test NLL {nll.mean():.3f} nats",
    )
    np.savez(os.path.join(out_dir, f"samples_step_{step}.npz"), samples=samples)

    true_logp = toy_density(name, test_data)
    report = {
        "step": step,
        "dataset": name,
        "sde": config.training.sde,
        "test_nll_nats": float(nll.mean()),
        "test_nll_stderr": float(nll.std(ddof=1) / math.sqrt(len(nll))),
        "num_test": len(nll),
        "likelihood_nfe_mean": float(np.mean(nfes)),
        "gaussian_baseline_nll_nats": gaussian_nll(train_data, test_data),
        "true_nll_nats": None if true_logp is None else float(-np.mean(true_logp)),
        "sampler": config.sampling.method,
        "sampling_nfe": int(res.nfe),
        "num_samples": int(samples.shape[0]),
        "samples_png": png,
    }
    if name == "gmm":
        # The mixture is known: how often samples land in each component, against the weights.
        comp = np.asarray(TOY_GMM.responsibilities(samples)).argmax(-1)
        freq = np.bincount(comp, minlength=TOY_GMM.num_components) / len(comp)
        report["sample_component_freqs"] = [round(float(f), 4) for f in freq]
        report["true_component_weights"] = [float(w) for w in TOY_GMM.weights]
        report["max_component_weight_error"] = float(np.max(np.abs(freq - TOY_GMM.weights)))
    path = os.path.join(out_dir, f"report_step_{step}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    report["report_path"] = path
    return report


def to_uint8(x: np.ndarray, *, centered: bool) -> np.ndarray:
    """Model-space images (``[-1, 1]`` if ``centered`` else ``[0, 1]``) -> uint8 ``[0, 255]``."""
    x = (np.asarray(x, np.float32) + 1) / 2 if centered else np.asarray(x, np.float32)
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def sample(config, workdir: str) -> dict:
    """Draws ``config.sampling.batch_size`` samples from the latest checkpoint's EMA parameters.

    Uses the sampler of ``config.sampling`` (any PC predictor/corrector or the ODE). Writes
    ``workdir/samples/sample_step_<step>.{png,npz}``: a PNG grid (images) or a scatter plot next
    to data (2-D toy sets), and the raw samples (uint8 for images).
    """
    exp, state, step = _restore_latest(config, workdir)
    n = config.sampling.get("batch_size", 64)
    sample_fn = builders.sampler_from_config(config.sampling, exp.sde)
    run = jax.jit(lambda params, key: sample_fn(exp.score_fn(params), key, (n, *exp.data_shape)))
    res = run(state.ema_params, jax.random.fold_in(exp.eval_key, 2 * 10**6 + step))
    x = np.asarray(res.x)
    out_dir = os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"sample_step_{step}")
    if len(exp.data_shape) == 3:
        images = to_uint8(x, centered=config.data.centered)
        png = plotting.save_image_grid(stem + ".png", images)
        np.savez(stem + ".npz", samples=images)
    else:
        data = make_toy_dataset(config.data.dataset, n, config.data.seed + 1)
        title = f"{config.data.dataset}: {config.sampling.method} sampler, step {step}"
        png = plotting.scatter_samples(stem + ".png", data=data, samples=x, title=title)
        np.savez(stem + ".npz", samples=x)
    return {"step": step, "num_samples": n, "nfe": int(res.nfe), "png": png, "npz": stem + ".npz"}
