"""Evaluation: checkpoint -> loss, likelihood and samples -> JSON report (and pictures).

For image configs, ``--mode eval`` works on one or several checkpoints (``eval.checkpoints``) and
writes everything under ``workdir/eval/step_<step>/``. Its long parts are resumable: bits/dim
results are saved after every batch and samples after every round, so a preempted evaluation
started again with the same command continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scoresde_jax import builders, plotting
from scoresde_jax.checkpoint import Checkpointer
from scoresde_jax.data import TOY_GMM, make_toy_dataset, toy_density
from scoresde_jax.fileio import atomic_savez
from scoresde_jax.likelihood import bits_per_dim, log_likelihood
from scoresde_jax.parallel import device_count, sharded_batch_fn, sharded_sampler
from scoresde_jax.plotting import to_uint8
from scoresde_jax.sharding import make_data_mesh
from scoresde_jax.train import build_experiment, check_workdir, to_host

__all__ = [
    "evaluate",
    "default_sample_metrics",
    "reference_stats",
    "gaussian_nll",
    "sample",
    "to_uint8",
    "checkpoint_steps",
    "restore_experiment",
]

log = logging.getLogger(__name__)

# ``sample_metrics(config, make_batches) -> dict``: quality metrics of generated uint8 images
# (FID, IS, KID, ...); ``make_batches()`` returns a fresh iterator over ``[n, H, W, C]`` uint8
# batches each time it is called (one pass per metric).
SampleMetrics = Callable[[object, Callable[[], Iterator[np.ndarray]]], dict]


def gaussian_nll(train: np.ndarray, test: np.ndarray) -> float:
    """Mean test NLL (nats) of a single Gaussian fitted by maximum likelihood to ``train``."""
    mu = train.mean(0)
    cov = np.cov(train.astype(np.float64), rowvar=False, bias=True)
    d = test.astype(np.float64) - mu
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    return float(np.mean(0.5 * (maha + logdet + train.shape[1] * math.log(2 * math.pi))))


def restore_experiment(config, workdir: str, step: int | None = None):
    """``(experiment, state, step)`` of checkpoint ``step`` (default: the newest readable one)."""
    check_workdir(workdir)
    exp = build_experiment(config)
    state = Checkpointer(workdir, read_only=True).restore(exp.abstract_target(), step)
    return exp, state, int(jax.device_get(state.step))


def checkpoint_steps(config, workdir: str) -> list[int]:
    """The checkpoint steps ``--mode eval`` evaluates, from ``config.eval.checkpoints``.

    ``"latest"`` (default): the newest checkpoint; ``"all"``: every saved one; ``"snapshots"``:
    snapshots ``k * training.snapshot_freq`` for ``eval.begin_ckpt <= k <= eval.end_ckpt`` (the
    original code's numbering); or a comma-separated list of steps.
    """
    ckpt = Checkpointer(workdir, read_only=True)
    saved = ckpt.all_steps()
    if not saved:
        raise FileNotFoundError(
            f"No checkpoint in {ckpt.directory}. Train first with --mode train and the same "
            "--workdir."
        )
    which = str(config.eval.get("checkpoints", "latest")).strip().lower()
    if which == "latest":
        return [saved[-1]]
    if which == "all":
        return saved
    if which == "snapshots":
        freq = config.training.snapshot_freq
        wanted = range(config.eval.begin_ckpt, config.eval.end_ckpt + 1)
        steps = [k * freq for k in wanted if k * freq in saved]
        if not steps:
            raise FileNotFoundError(
                f"No snapshot k * {freq} for k in [{config.eval.begin_ckpt}, "
                f"{config.eval.end_ckpt}] in {ckpt.directory}; saved steps: {saved}."
            )
        return steps
    try:
        steps = [int(s) for s in which.split(",") if s.strip()]
    except ValueError:
        raise ValueError(
            f"eval.checkpoints={which!r}: use 'latest', 'all', 'snapshots' or a comma-separated "
            "list of steps."
        ) from None
    missing = [s for s in steps if s not in saved]
    if missing:
        raise FileNotFoundError(f"No checkpoint for steps {missing}; saved steps: {saved}.")
    return steps


def default_sample_metrics(config) -> SampleMetrics | None:
    """The sample-quality metrics ``--mode eval`` reports for ``config``.

    * FID, KID (against ``eval.fid_stats_path``) and the Inception Score when the FID Inception
      weights are found (``eval.inception_weights``, ``$SCORESDE_INCEPTION_WEIGHTS`` or the
      cache directory; see :func:`scoresde_jax.metrics.inception.find_inception_weights`);
    * the Frechet distance in the feature space of the project's small classifier where the
      dataset has one (MNIST, CIFAR-10), which needs no download.

    Asking for FID (``eval.fid_stats_path`` or ``eval.inception_weights``) without the weights
    or the statistics file is an error raised here, before any sampling starts.
    """
    ec, d = config.eval, config.data
    parts = []
    explicit = ec.get("inception_weights", None)
    stats_path = ec.get("fid_stats_path", None)
    # Feature networks split each batch over the local devices. Every process reads the same
    # sample files, so with several processes each one scores them on its own devices.
    mesh = make_data_mesh(config.get("num_devices", None)) if jax.process_count() == 1 else None
    if stats_path and not os.path.exists(stats_path):
        raise FileNotFoundError(
            f"eval.fid_stats_path={stats_path!r} does not exist. Compute reference statistics "
            "with --mode stats (or use score_sde's / pytorch-fid's .npz files)."
        )
    from scoresde_jax.metrics.inception import find_inception_weights

    try:
        weights = find_inception_weights(explicit)
    except FileNotFoundError:
        if explicit or stats_path:
            raise
        weights = None
    if weights is not None:
        from scoresde_jax.metrics.quality import InceptionFeatures, inception_metrics

        features = InceptionFeatures(
            str(weights), mesh=mesh, batch_size=ec.get("inception_batch_size", 200)
        )
        keep = ec.get("kid_features", 10_000)
        parts.append(
            lambda make: inception_metrics(make(), features, stats_path, keep_features=keep)
        )
    classifier_part = _classifier_metrics(d, mesh)
    if classifier_part is not None:
        parts.append(classifier_part)
    if not parts:
        return None

    def run(config, make_batches) -> dict:
        out: dict = {}
        for part in parts:
            result = part(make_batches)
            warnings = out.get("warnings", []) + result.pop("warnings", [])
            out.update(result)
            if warnings:
                out["warnings"] = warnings
        return out

    return run


def _classifier_metrics(data_config, mesh):
    """FD in the feature space of the project's classifier for this dataset, or ``None``."""
    from scoresde_jax.metrics.classifier import classifier_fd, classifier_for_dataset

    d = data_config
    name = classifier_for_dataset(str(d.dataset), d.image_size, d.num_channels)
    if name is None:
        return None
    # Against the statistics of the test split shipped with the classifier.
    return lambda make_batches: classifier_fd(make_batches(), name, mesh=mesh)


def _classifier_stats(data_config, make_batches, out_dir: str, stem: str) -> dict:
    from scoresde_jax.metrics.classifier import (
        classifier_for_dataset,
        load_classifier,
        reference_stats,
    )
    from scoresde_jax.metrics.fid import save_stats

    d = data_config
    name = classifier_for_dataset(str(d.dataset), d.image_size, d.num_channels)
    if name is None:
        return {}
    clf = load_classifier(name)
    stats = reference_stats(clf, make_batches())
    path = os.path.join(out_dir, f"{stem}_{name}.npz")
    save_stats(
        path,
        stats.mean,
        stats.cov,
        classifier=name,
        classifier_sha256=clf.fingerprint,
        num_examples=stats.count,
        dataset=str(d.dataset),
    )
    return {f"classifier_{name}": path}


def evaluate(config, workdir: str, *, sample_metrics: SampleMetrics | None = None) -> dict:
    """Evaluates checkpoints in ``workdir`` and writes JSON reports; returns the last report.

    Image configs (see :func:`checkpoint_steps` for which checkpoints): the loss on the test
    split (``eval.enable_loss``), bits/dim with uniform dequantization averaged over
    ``eval.num_repeats`` passes (``eval.enable_bpd``, splits in ``eval.bpd_dataset``), and
    ``eval.num_samples`` samples in resumable rounds saved as uint8 ``.npz`` with a PNG grid
    (``eval.enable_sampling``), scored by ``sample_metrics`` when given.

    Toy configs: the latest checkpoint's test NLL (exact-trace probability-flow likelihood), a
    fitted-Gaussian baseline, the true NLL where known, and samples next to the test data.
    """
    if config.data.get("dataset_kind", "image") == "toy":
        return _evaluate_toy(config, workdir)
    if sample_metrics is None and config.eval.get("enable_sampling", False):
        sample_metrics = default_sample_metrics(config)
    report = {}
    for step in checkpoint_steps(config, workdir):
        report = _evaluate_images(config, workdir, step, sample_metrics)
    return report


def _masked_mean_stderr(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def _evaluate_images(config, workdir: str, step: int, sample_metrics) -> dict:
    from scoresde_jax.data import eval_batches, num_eval_batches, to_model_space
    from scoresde_jax.sharding import to_global_array

    exp, state, step = restore_experiment(config, workdir, step)
    ec, d = config.eval, config.data
    is_main = jax.process_index() == 0
    pindex, pcount = jax.process_index(), jax.process_count()
    out_dir = os.path.join(workdir, "eval", f"step_{step}")
    os.makedirs(out_dir, exist_ok=True)
    n_dev = device_count(exp.mesh)
    batch_size = -(-ec.batch_size // (n_dev * pcount)) * n_dev * pcount
    max_examples = ec.get("max_examples", None)
    report = {"step": step, "dataset": d.dataset, "sde": config.training.sde}
    t0 = time.perf_counter()
    eval_key = jax.random.fold_in(exp.eval_key, step)

    def batches(split):
        source = builders.image_source_from_config(d, split)
        n_batches = num_eval_batches(
            source, global_batch_size=batch_size, process_count=pcount, max_examples=max_examples
        )
        it = eval_batches(
            source,
            global_batch_size=batch_size,
            process_index=pindex,
            process_count=pcount,
            max_examples=max_examples,
        )
        return source, n_batches, it

    def global_(x):
        return to_global_array(np.asarray(x), exp.mesh)

    if ec.get("enable_loss", True):

        def per_example_loss(params, key, x):
            model_fn = lambda x, labels: exp.model.apply(params, x, labels, train=False)
            return (exp.loss_fn(model_fn, x, key)[1],)

        loss_fn = sharded_batch_fn(exp.mesh, per_example_loss, 1, 1)
        _, n_batches, it = batches("test")
        losses = []
        for i, (images, _, mask) in enumerate(
            tqdm(it, total=n_batches, desc="eval loss", disable=not is_main, leave=False)
        ):
            x = to_model_space(images, centered=d.centered)
            (per,) = loss_fn(state.ema_params, jax.random.fold_in(eval_key, i), global_(x))
            losses.append(to_host(per)[to_host(global_(mask))])
        losses = np.concatenate(losses)
        report["eval_loss"], report["eval_loss_stderr"] = _masked_mean_stderr(losses)
        report["eval_loss_examples"] = len(losses)

    if ec.get("enable_bpd", False):
        ode = dict(
            exact_trace=ec.get("exact_trace", False),
            num_probes=ec.get("num_probes", 1),
            rtol=ec.get("rtol", 1e-5),
            atol=ec.get("atol", 1e-5),
            solver=ec.get("ode_solver", "tsit5"),
        )

        def per_example_bpd(params, key, x01):
            res = bits_per_dim(
                exp.sde,
                exp.score_fn(params),
                x01,
                key,
                centered=d.centered,
                dequantize=True,
                **ode,
            )
            return res.bpd, jnp.broadcast_to(res.nfe, res.bpd.shape)

        bpd_fn = sharded_batch_fn(exp.mesh, per_example_bpd, 1, 2)
        for split_i, split in enumerate(
            s.strip() for s in str(ec.get("bpd_dataset", "test")).split(",")
        ):
            per_repeat = []
            nfe_all = []
            for r in range(ec.get("num_repeats", 1)):
                path = os.path.join(out_dir, f"bpd_{split}_repeat_{r}.npz")
                done = np.load(path) if os.path.exists(path) else None
                if done is not None and bool(done["complete"]):
                    per_repeat.append(done["bpd"])
                    nfe_all.append(done["nfe"])
                    continue
                bpds = list(done["bpd"]) if done is not None else []
                nfes = list(done["nfe"]) if done is not None else []
                first = int(done["next_batch"]) if done is not None else 0
                _, n_batches, it = batches(split)
                key_r = jax.random.fold_in(eval_key, 1000 + 100 * split_i + r)
                bar = tqdm(
                    total=n_batches,
                    initial=first,
                    desc=f"bpd {split} {r + 1}/{ec.num_repeats}",
                    disable=not is_main,
                    leave=False,
                )
                for i, (images, _, mask) in enumerate(it):
                    if i < first:
                        continue
                    x01 = images.astype(np.float32) / 255.0
                    bpd, nfe = bpd_fn(state.ema_params, jax.random.fold_in(key_r, i), global_(x01))
                    keep = to_host(global_(mask))
                    bpds.extend(to_host(bpd)[keep].tolist())
                    nfes.extend(to_host(nfe)[keep].tolist())
                    bar.update(1)
                    if is_main:
                        atomic_savez(
                            path,
                            bpd=np.array(bpds),
                            nfe=np.array(nfes),
                            next_batch=i + 1,
                            complete=False,
                        )
                bar.close()
                if is_main:
                    atomic_savez(
                        path,
                        bpd=np.array(bpds),
                        nfe=np.array(nfes),
                        next_batch=n_batches,
                        complete=True,
                    )
                per_repeat.append(np.array(bpds))
                nfe_all.append(np.array(nfes))
            allb = np.concatenate(per_repeat)
            finite = np.isfinite(allb)
            mean, stderr = _masked_mean_stderr(allb[finite])
            report[f"bpd_{split}"] = mean
            report[f"bpd_{split}_stderr"] = stderr
            report[f"bpd_{split}_per_repeat"] = [float(np.nanmean(b)) for b in per_repeat]
            report[f"bpd_{split}_examples"] = int(len(per_repeat[0]))
            report[f"bpd_{split}_failed_solves"] = int((~finite).sum())
            report["bpd_nfe_mean"] = float(np.mean(np.concatenate(nfe_all)))

    if ec.get("enable_sampling", False):
        report.update(
            _sample_rounds(config, exp, state, step, out_dir, batch_size, eval_key, sample_metrics)
        )

    report["eval_seconds"] = time.perf_counter() - t0
    if is_main:
        path = os.path.join(workdir, "eval", f"report_step_{step}.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        report["report_path"] = path
    return report


def _sample_rounds(config, exp, state, step, out_dir, batch_size, eval_key, sample_metrics):
    """``eval.num_samples`` samples in rounds of ``batch_size``; finished rounds are skipped."""
    ec, d = config.eval, config.data
    is_main = jax.process_index() == 0
    n_rounds = -(-ec.num_samples // batch_size)
    sample_fn = builders.sampler_from_config(config.sampling, exp.sde)
    run = sharded_sampler(exp.mesh, sample_fn, exp.score_fn, (batch_size, *exp.data_shape))
    sample_dir = os.path.join(out_dir, "samples")
    os.makedirs(sample_dir, exist_ok=True)
    paths = [os.path.join(sample_dir, f"samples_{r}.npz") for r in range(n_rounds)]
    nfe = None
    todo = [r for r in range(n_rounds) if not os.path.exists(paths[r])]
    if len(todo) < n_rounds:
        log.info("Resuming sampling: %d of %d rounds already done", n_rounds - len(todo), n_rounds)
    for r in tqdm(todo, desc="sampling rounds", disable=not is_main):
        x, nfe = run(state.ema_params, jax.random.fold_in(eval_key, 10**6 + r))
        images = to_uint8(to_host(x), centered=d.centered)
        if is_main:
            atomic_savez(paths[r], samples=images)

    def read_all():
        left = ec.num_samples
        for p in paths:
            images = np.load(p)["samples"][:left]
            left -= len(images)
            yield images

    first = np.load(paths[0])["samples"][:64]
    out = {
        "sampler": config.sampling.method,
        "num_samples": int(ec.num_samples),
        "sample_dir": sample_dir,
        "samples_png": plotting.save_image_grid(os.path.join(out_dir, "samples.png"), first)
        if is_main
        else None,
    }
    if nfe is not None:
        out["sampling_nfe"] = int(nfe)
    if sample_metrics is not None:
        out.update(sample_metrics(config, read_all))
    return out


def _evaluate_toy(config, workdir: str) -> dict:
    exp, state, step = restore_experiment(config, workdir)
    ec = config.eval
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
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
    samples = to_host(res.x)
    is_main = jax.process_index() == 0
    png = os.path.join(out_dir, f"samples_step_{step}.png")
    if is_main:
        plotting.scatter_samples(
            png,
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
    if is_main:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
    report["report_path"] = path
    return report


def sample(config, workdir: str) -> dict:
    """Draws ``config.sampling.batch_size`` samples from the latest checkpoint's EMA parameters.

    ``config.sampling.task`` other than ``"generate"`` runs a controllable-generation task
    instead (see :mod:`scoresde_jax.tasks`).

    Uses the sampler of ``config.sampling`` (any PC predictor/corrector or the ODE), split over
    the devices of the mesh. Writes ``workdir/samples/sample_step_<step>.{png,npz}``: a PNG grid
    (images) or a scatter plot next to data (2-D toy sets), and the raw samples (uint8 for
    images).
    """
    task = str(config.sampling.get("task", "generate")).lower()
    if task != "generate":
        from scoresde_jax.tasks import run_task

        return run_task(config, workdir)
    exp, state, step = restore_experiment(config, workdir)
    n_dev = device_count(exp.mesh)
    n = -(-config.sampling.get("batch_size", 64) // n_dev) * n_dev
    sample_fn = builders.sampler_from_config(config.sampling, exp.sde)
    run = sharded_sampler(exp.mesh, sample_fn, exp.score_fn, (n, *exp.data_shape))
    x, nfe = run(state.ema_params, jax.random.fold_in(exp.eval_key, 2 * 10**6 + step))
    x = to_host(x)
    out = {"step": step, "num_samples": n, "nfe": int(nfe)}
    if jax.process_index() != 0:
        return out
    out_dir = os.path.join(workdir, "samples")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"sample_step_{step}")
    if exp.is_image:
        images = to_uint8(x, centered=config.data.centered)
        png = plotting.save_image_grid(stem + ".png", images)
        np.savez(stem + ".npz", samples=images)
    else:
        data = make_toy_dataset(config.data.dataset, n, config.data.seed + 1)
        title = f"{config.data.dataset}: {config.sampling.method} sampler, step {step}"
        png = plotting.scatter_samples(stem + ".png", data=data, samples=x, title=title)
        np.savez(stem + ".npz", samples=x)
    return out | {"png": png, "npz": stem + ".npz"}


def reference_stats(config, workdir: str) -> dict:
    """``--mode stats``: feature statistics of a dataset split, the reference of FID and KID.

    Reads ``eval.stats_split`` (default ``"train"``, as the paper's CIFAR-10 statistics) of the
    config's dataset, at most ``eval.max_examples`` images, and writes to ``workdir/stats/``:

    * ``<dataset>_<split>_inception.npz`` (mu, sigma and up to ``eval.kid_features`` pool_3
      features) when the Inception weights are found, for ``eval.fid_stats_path``;
    * ``<dataset>_<split>_<classifier>.npz`` in the feature space of the project's small
      classifier where the dataset has one.

    Runs on the local devices of one process.
    """
    from scoresde_jax.data import eval_batches, num_eval_batches
    from scoresde_jax.metrics.inception import find_inception_weights

    ec, d = config.eval, config.data
    split = ec.get("stats_split", "train")
    source = builders.image_source_from_config(d, split)
    max_examples = ec.get("max_examples", None)
    batch = ec.get("inception_batch_size", 200)
    kw = dict(global_batch_size=batch, max_examples=max_examples)
    n_batches = num_eval_batches(source, **kw)

    def make_batches():
        for images, _, mask in tqdm(eval_batches(source, **kw), total=n_batches, desc=split):
            yield images[mask]

    out_dir = os.path.join(workdir, "stats")
    os.makedirs(out_dir, exist_ok=True)
    stem = f"{str(d.dataset).lower()}_{split}"
    written = {}
    explicit = ec.get("inception_weights", None)
    try:
        weights = find_inception_weights(explicit)
    except FileNotFoundError as e:
        if explicit:
            raise
        weights = None
        log.warning("No Inception statistics: %s", str(e).splitlines()[0])
    if weights is not None:
        from scoresde_jax.metrics.quality import (
            InceptionFeatures,
            inception_statistics,
            save_reference_stats,
        )

        features = InceptionFeatures(str(weights), batch_size=batch)
        stats, _ = inception_statistics(
            make_batches(), features, keep_features=ec.get("kid_features", 10_000)
        )
        path = os.path.join(out_dir, f"{stem}_inception.npz")
        save_reference_stats(path, stats, dataset=str(d.dataset), split=split)
        written["inception"] = path
        written["num_examples"] = stats.count
    classifier = _classifier_stats(d, make_batches, out_dir, stem)
    if classifier:
        written.update(classifier)
    if not written:
        raise FileNotFoundError(
            "Nothing to compute: no Inception weights were found (see the README, 'Sample "
            "quality') and the dataset has no project classifier."
        )
    return written
