"""Sample quality against score evaluations (NFE) of every sampler, on Gaussian mixtures.

Each sampler draws ``n`` points with the exact (closed-form) score of a Gaussian mixture and is
compared with ``n`` exact samples of the mixture:

* ``sw``: the sliced 2-Wasserstein distance (``--projections`` fixed random directions;
  :mod:`scoresde_jax.metrics.sample_distance`);
* ``weight_tv``: the total variation between the mixture weights and the frequencies of the
  samples' most likely components (argmax of the exact responsibilities);
* ``wall_s``: the median over up to ``--repeats`` calls of the compiled sampler (fewer once
  they have taken ``--time-budget`` seconds); ``compile_s`` is the ahead-of-time compilation.

The noise floor is the same two numbers for independent exact samples (``--floor-repeats``
pairs; mean and standard deviation). The reference is the 1000-step PC sampler (reverse-diffusion
predictor, no corrector), its metrics averaged over ``--ref-repeats`` seeds. A sampler *matches
the reference* at some NFE when ``sw <= sw_ref + 2 sd(sw_floor)`` and ``weight_tv <= tv_ref + 2
sd(tv_floor)``: it is no worse than the reference by more than twice the sampling noise of one
run's metric, so a sampler as good as the reference passes with probability about 0.98 per
metric. ``min_nfe_matching`` is the smallest NFE of the sweep from which on every larger NFE of
that sampler matches (null if none). All samplers draw their prior (and Brownian) noise from the
same key, so the deterministic ones converge to the same points and share one realization of
the sampling noise.

Problems: ``gmm2d`` is the toy configs' 2-D mixture (8 components on a circle, std 0.12,
unequal weights; :data:`scoresde_jax.data.TOY_GMM`); ``gmm64d`` a 64-D mixture of 6 components
with axis-aligned anisotropic covariances (per-dimension stds log-uniform in [0.2, 1]), means 3
apart from the origin in random directions, weights 0.05-0.3. Both scores are evaluated in
closed form for diagonal covariances, ``O(B K D)`` per call (checked against
:meth:`GaussianMixture.score_fn` at start-up).

Samplers: fixed budgets at the nominal NFE of ``--nfe`` (the actual NFE is reported: Heun
spends ``2 n - 1``, PC with a corrector two per step), adaptive ones over a sweep of tolerances
(tighter ones are skipped once a run takes more than ``--max-run-s`` seconds).

Examples::

    python bench/samplers.py --out bench/results/samplers.json --plot docs/samplers_nfe.png
    python bench/samplers.py --quick                      # smoke test, a few seconds per sampler
    python bench/samplers.py --problems gmm2d --samplers edm_heun dpm_solver_3 --n-2d 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax import sampling
from scoresde_jax.core.gmm import GaussianMixture
from scoresde_jax.core.sde import get_sde
from scoresde_jax.data import TOY_GMM
from scoresde_jax.metrics.sample_distance import random_directions, sliced_wasserstein, weight_error

REFERENCE = ("pc_reverse_diffusion", 1000)


def mixture_64d(seed: int = 0, dim: int = 64, k: int = 6) -> GaussianMixture:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((k, dim))
    means = 3.0 * means / np.linalg.norm(means, axis=1, keepdims=True)
    stds = np.exp(rng.uniform(np.log(0.2), np.log(1.0), (k, dim)))
    covs = np.stack([np.diag(s**2) for s in stds])
    weights = np.array([0.05, 0.1, 0.15, 0.2, 0.2, 0.3])[:k]
    return GaussianMixture(weights / weights.sum(), means, covs)


PROBLEMS = {"gmm2d": lambda: TOY_GMM, "gmm64d": mixture_64d}


def _diag_params(mixture: GaussianMixture):
    var0 = np.diagonal(mixture.covs, axis1=1, axis2=2)
    if not np.allclose(mixture.covs, var0[:, :, None] * np.eye(mixture.dim)):
        raise ValueError("the closed-form benchmark score needs diagonal covariances")
    log_w = jnp.log(jnp.asarray(mixture.weights, jnp.float32))
    return log_w, jnp.asarray(mixture.means, jnp.float32), jnp.asarray(var0, jnp.float32)


def _component_logits(x, log_w, means, var0, alpha, sigma):
    """``[B, K]`` log w_k + log N(x; alpha mu_k, diag(alpha^2 c_k + sigma^2)) (no 2 pi)."""
    var = alpha[:, None, None] ** 2 * var0[None] + sigma[:, None, None] ** 2  # [B, K, D]
    diff = alpha[:, None, None] * means[None] - x[:, None, :]
    return log_w[None] - 0.5 * jnp.sum(diff**2 / var + jnp.log(var), axis=-1), diff, var


def diag_mixture_score_fn(mixture: GaussianMixture, sde):
    """The exact score of the perturbed mixture, for diagonal component covariances."""
    log_w, means, var0 = _diag_params(mixture)

    def score_fn(x, t):
        alpha, sigma = sde.marginal_coeffs(t)
        logits, diff, var = _component_logits(x, log_w, means, var0, alpha, sigma)
        resp = jax.nn.softmax(logits, axis=-1)
        return jnp.sum(resp[:, :, None] * diff / var, axis=1)

    return score_fn


def component_labels(mixture: GaussianMixture, x) -> np.ndarray:
    """Most likely component of each point under the clean mixture."""
    log_w, means, var0 = _diag_params(mixture)
    ones = jnp.ones((x.shape[0],), jnp.float32)
    logits, _, _ = _component_logits(jnp.asarray(x), log_w, means, var0, ones, 0 * ones)
    return np.asarray(jnp.argmax(logits, axis=-1))


def _check_score(mixture, sde) -> float:
    x = jax.random.normal(jax.random.key(0), (16, mixture.dim)) * 2
    t = jnp.linspace(0.01, 1.0, 16)
    got = diag_mixture_score_fn(mixture, sde)(x, t)
    want = mixture.score_fn(sde)(x, t)
    err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
    if err > 1e-4:
        raise AssertionError(f"closed-form score disagrees with GaussianMixture.score_fn: {err}")
    return err


# name -> (sample(sde, score_fn, key, shape, nfe) -> SampleResult). The nominal NFE is turned
# into each sampler's own step count.
FIXED_SAMPLERS = {
    "pc_reverse_diffusion": lambda sde, f, k, s, n: sampling.pc_sample(
        sde, f, k, s, predictor="reverse_diffusion", corrector="none", num_steps=n
    ),
    "pc_euler_maruyama": lambda sde, f, k, s, n: sampling.pc_sample(
        sde, f, k, s, predictor="euler_maruyama", corrector="none", num_steps=n
    ),
    "pc_langevin": lambda sde, f, k, s, n: sampling.pc_sample(
        sde,
        f,
        k,
        s,
        predictor="reverse_diffusion",
        corrector="langevin",
        snr=0.16,
        num_steps=max(n // 2, 1),
    ),
    "edm_heun": lambda sde, f, k, s, n: sampling.edm_sample(
        sde, f, k, s, num_steps=max((n + 1) // 2, 1)
    ),
    # Stochastic churn as in Karras et al.'s Algorithm 2, restricted to the middle noise levels.
    "edm_churn": lambda sde, f, k, s, n: sampling.edm_sample(
        sde, f, k, s, num_steps=max((n + 1) // 2, 1), churn=10.0, s_tmin=0.05, s_tmax=50.0
    ),
    "dpm_solver_pp_2m": lambda sde, f, k, s, n: sampling.dpm_solver_pp_sample(
        sde, f, k, s, num_steps=n, order=2
    ),
    "dpm_solver_pp_3m": lambda sde, f, k, s, n: sampling.dpm_solver_pp_sample(
        sde, f, k, s, num_steps=n, order=3
    ),
    "dpm_solver_1": lambda sde, f, k, s, n: sampling.dpm_solver_sample(
        sde, f, k, s, nfe=n, order=1
    ),
    "dpm_solver_2": lambda sde, f, k, s, n: sampling.dpm_solver_sample(
        sde, f, k, s, nfe=n, order=2
    ),
    "dpm_solver_3": lambda sde, f, k, s, n: sampling.dpm_solver_sample(
        sde, f, k, s, nfe=n, order=3
    ),
}

# name -> (sample(sde, score_fn, key, shape, tol) -> SampleResult, tolerances). The tolerance is
# traced, so one compiled program serves the whole sweep.
DPM_RTOLS = (0.2, 0.1, 0.05, 0.02, 0.01, 0.003)
ADAPTIVE_SAMPLERS = {
    # DPM-Solver's (rtol, atol) pair (0.05, 0.0078) scaled together.
    "dpm_solver_adaptive_12": (
        lambda sde, f, k, s, tol: sampling.dpm_solver_adaptive_sample(
            sde, f, k, s, order=2, rtol=tol, atol=tol * 0.156
        ),
        DPM_RTOLS,
    ),
    "dpm_solver_adaptive_23": (
        lambda sde, f, k, s, tol: sampling.dpm_solver_adaptive_sample(
            sde, f, k, s, order=3, rtol=tol, atol=tol * 0.156
        ),
        DPM_RTOLS,
    ),
    "sde_adaptive": (
        lambda sde, f, k, s, tol: sampling.sde_adaptive_sample(sde, f, k, s, rtol=tol, atol=tol),
        (0.3, 0.1, 0.05, 0.03, 0.01, 0.003),
    ),
    "ode_tsit5": (
        lambda sde, f, k, s, tol: sampling.ode_sample(sde, f, k, s, rtol=tol, atol=tol),
        (1e-1, 1e-2, 1e-3, 1e-4, 1e-5),
    ),
}


def _compile(jitted, *args):
    """``(compiled, seconds)``: ahead-of-time compilation, timed apart from the runs."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _timed(compiled, args, repeats: int, budget_s: float):
    """``(output, median_s)`` of up to ``repeats`` calls, stopping once they have taken
    ``budget_s`` seconds (at least one call)."""
    times = []
    while len(times) < max(repeats, 1) and (not times or sum(times) < budget_s):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def run_problem(args, name: str) -> dict:
    mixture = PROBLEMS[name]()
    sde = get_sde(args.sde)
    n = args.n_2d if mixture.dim == 2 else args.n_hd
    shape = (n, mixture.dim)
    score_err = _check_score(mixture, sde)
    score_fn = diag_mixture_score_fn(mixture, sde)
    root = jax.random.key(args.seed)
    directions = random_directions(args.seed, args.projections, mixture.dim)
    exact = mixture.sample(jax.random.fold_in(root, 0), n)
    sample_key = jax.random.fold_in(root, 1)

    def metrics(x):
        x = jnp.asarray(x, jnp.float32)
        if not bool(jnp.all(jnp.isfinite(x))):
            return {"sw": None, "weight_tv": None}
        return {
            "sw": float(sliced_wasserstein(x, exact, directions)),
            "weight_tv": weight_error(component_labels(mixture, x), mixture.weights),
        }

    floor = [
        metrics(mixture.sample(jax.random.fold_in(root, 100 + r), n))
        for r in range(args.floor_repeats)
    ]
    floor_stats = {
        key: {
            "mean": statistics.mean(m[key] for m in floor),
            "sd": statistics.stdev(m[key] for m in floor) if len(floor) > 1 else 0.0,
        }
        for key in ("sw", "weight_tv")
    }

    rows = []

    def record(sampler, budget, res, compile_s, wall):
        row = {"sampler": sampler, "budget": budget, "nfe": int(res.nfe)}
        row.update(metrics(res.x), wall_s=wall, compile_s=compile_s)
        rows.append(row)
        print(json.dumps({"problem": name, **row}), flush=True)
        return row

    def fixed_fn(sampler, budget):
        return jax.jit(lambda key: FIXED_SAMPLERS[sampler](sde, score_fn, key, shape, budget))

    fixed = [s for s in args.samplers if s in FIXED_SAMPLERS]
    for sampler in fixed:
        for budget in args.nfe:
            fn, compile_s = _compile(fixed_fn(sampler, budget), sample_key)
            res, wall = _timed(fn, (sample_key,), args.repeats, args.time_budget)
            record(sampler, budget, res, compile_s, wall)
    for sampler in args.samplers:
        if sampler not in ADAPTIVE_SAMPLERS:
            continue
        sample, tolerances = ADAPTIVE_SAMPLERS[sampler]
        if args.quick:
            tolerances = tolerances[1:3]
        jitted = jax.jit(lambda key, tol, sample=sample: sample(sde, score_fn, key, shape, tol))
        fn, compile_s = _compile(jitted, sample_key, jnp.float32(tolerances[0]))
        for tol in tolerances:
            res, wall = _timed(fn, (sample_key, jnp.float32(tol)), args.repeats, args.time_budget)
            record(sampler, tol, res, compile_s, wall)
            compile_s = 0.0  # one program serves the whole sweep
            if wall > args.max_run_s:
                break  # tighter tolerances only cost more

    # The reference quality: the 1000-step PC sampler, its metrics averaged over --ref-repeats
    # seeds (the first is the sweep's own run when the sweep has it).
    ref_fn = fixed_fn(*REFERENCE)
    ref_runs = [
        {k: r[k] for k in ("sw", "weight_tv")}
        for r in rows
        if (r["sampler"], r["budget"]) == REFERENCE
    ]
    for r in range(len(ref_runs), args.ref_repeats):
        ref_runs.append(metrics(ref_fn(jax.random.fold_in(root, 1000 + r)).x))
    reference = {
        "sampler": REFERENCE[0],
        "nfe": REFERENCE[1],
        "seeds": len(ref_runs),
        "runs": ref_runs,
        **{k: statistics.mean(m[k] for m in ref_runs) for k in ("sw", "weight_tv")},
    }

    thresholds = {
        "sw": reference["sw"] + 2 * floor_stats["sw"]["sd"],
        "weight_tv": reference["weight_tv"] + 2 * floor_stats["weight_tv"]["sd"],
    }
    for row in rows:
        row["matches_reference"] = row["sw"] is not None and all(
            row[k] <= thresholds[k] for k in thresholds
        )
    min_nfe = {}
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = sorted((r for r in rows if r["sampler"] == sampler), key=lambda r: r["nfe"])
        best = None
        for r in reversed(mine):
            if not r["matches_reference"]:
                break
            best = r["nfe"]
        min_nfe[sampler] = best
    return {
        "problem": name,
        "dim": mixture.dim,
        "components": mixture.num_components,
        "n": n,
        "sde": sde.name,
        "score_check_rel_err": score_err,
        "floor": floor_stats,
        "reference": reference,
        "thresholds": thresholds,
        "min_nfe_matching": min_nfe,
        "results": rows,
    }


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = report["problems"]
    fig, axes = plt.subplots(1, len(problems), figsize=(6.2 * len(problems), 5.6), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, prob in zip(axes[0], problems, strict=True):
        samplers = list(dict.fromkeys(r["sampler"] for r in prob["results"]))
        for i, sampler in enumerate(samplers):
            pts = sorted(
                (r["nfe"], r["sw"])
                for r in prob["results"]
                if r["sampler"] == sampler and r["sw"] is not None
            )
            if not pts:
                continue
            style = "--" if sampler in ADAPTIVE_SAMPLERS else "-"
            ax.plot(
                *zip(*pts, strict=True),
                style,
                marker="o",
                ms=3,
                lw=1.2,
                color=cmap((2 * i) % 20 + (2 * i) // 20),
                label=sampler,
            )
        ax.axhline(prob["floor"]["sw"]["mean"], color="k", lw=0.8, ls=":", label="exact vs exact")
        ax.axhline(
            prob["thresholds"]["sw"], color="k", lw=0.8, ls="-.", label="PC-1000 + 2 sd(floor)"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("score evaluations (NFE)")
        ax.set_ylabel("sliced Wasserstein-2 to exact samples")
        ax.set_title(
            f"{prob['problem']}: {prob['dim']}-D, {prob['components']} components, "
            f"n={prob['n']}, {prob['sde']}"
        )
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=6)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def markdown(report: dict) -> str:
    """The summary table (smallest matching NFE per sampler and problem) and one full metric
    table per problem, in Markdown."""
    problems = report["problems"]
    samplers = list(dict.fromkeys(r["sampler"] for p in problems for r in p["results"]))
    lines = ["| sampler | " + " | ".join(p["problem"] for p in problems) + " |"]
    lines.append("|---" * (len(problems) + 1) + "|")
    for sampler in samplers:
        cells = [str(p["min_nfe_matching"].get(sampler, "-")) for p in problems]
        cells = [c.replace("None", "never") for c in cells]
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    for p in problems:
        lines += [
            "",
            f"**{p['problem']}** ({p['dim']}-D, {p['components']} components, n = {p['n']}, "
            f"{p['sde']}): noise floor SW {p['floor']['sw']['mean']:.4f} +- "
            f"{p['floor']['sw']['sd']:.4f}, weight TV {p['floor']['weight_tv']['mean']:.4f} +- "
            f"{p['floor']['weight_tv']['sd']:.4f}; PC-1000 reference (mean of "
            f"{p['reference']['seeds']} seeds) SW {p['reference']['sw']:.4f}, weight TV "
            f"{p['reference']['weight_tv']:.4f}; match thresholds SW "
            f"{p['thresholds']['sw']:.4f}, TV {p['thresholds']['weight_tv']:.4f}.",
            "",
            "| sampler | budget | NFE | SW | weight TV | match | wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in p["results"]:
            sw = "NaN" if r["sw"] is None else f"{r['sw']:.4f}"
            tv = "NaN" if r["weight_tv"] is None else f"{r['weight_tv']:.4f}"
            match = "yes" if r["matches_reference"] else ""
            lines.append(
                f"| {r['sampler']} | {r['budget']} | {r['nfe']} | {sw} | {tv} | {match} | "
                f"{r['wall_s']:.3f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    all_samplers = list(FIXED_SAMPLERS) + list(ADAPTIVE_SAMPLERS)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--samplers", nargs="+", default=all_samplers, choices=all_samplers)
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 35, 50, 100, 1000])
    parser.add_argument("--sde", default="vpsde", choices=["vesde", "vpsde", "subvpsde"])
    parser.add_argument("--n-2d", type=int, default=10_000, help="samples, 2-D problem")
    parser.add_argument("--n-hd", type=int, default=4_000, help="samples, 64-D problem")
    parser.add_argument("--projections", type=int, default=256, help="sliced-W directions")
    parser.add_argument("--floor-repeats", type=int, default=8, help="exact-vs-exact pairs")
    parser.add_argument("--ref-repeats", type=int, default=3, help="seeds of the reference")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (median)")
    parser.add_argument(
        "--time-budget", type=float, default=5.0, help="stop timing a run after this many s"
    )
    parser.add_argument(
        "--max-run-s", type=float, default=30.0, help="skip tighter tolerances past this time"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes")
    parser.add_argument("--out", default=None, help="write the full JSON report here")
    parser.add_argument("--plot", default=None, help="write the PNG plot here")
    parser.add_argument(
        "--markdown-from", default=None, help="print the Markdown tables of a saved report"
    )
    args = parser.parse_args(argv)
    if args.markdown_from:
        with open(args.markdown_from) as f:
            print(markdown(json.load(f)))
        return None
    if args.quick:
        args.n_2d, args.n_hd = 256, 256
        args.nfe = [n for n in args.nfe if n <= 20] or [10]
        args.projections, args.floor_repeats, args.repeats, args.ref_repeats = 32, 2, 1, 1

    start = time.perf_counter()
    report = {
        "bench": "samplers",
        "args": vars(args),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "problems": [],
    }
    for name in args.problems:
        prob = run_problem(args, name)
        report["problems"].append(prob)
        summary = {k: v for k, v in prob.items() if k != "results"}
        print(json.dumps({"summary": summary}), flush=True)
    report["total_s"] = time.perf_counter() - start
    report["loadavg_1min"] = os.getloadavg()[0]
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    if args.plot:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        plot(report, args.plot)
    print(json.dumps({"total_s": report["total_s"], "out": args.out, "plot": args.plot}))
    return report


if __name__ == "__main__":
    main()
