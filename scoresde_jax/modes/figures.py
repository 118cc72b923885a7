"""``--mode toy_figures``: pictures of what a model learned on 2-D data, in ``workdir/figures/``.

``score_field_step_<step>.png``: the learned score at several times over the density ``p_t`` (a
histogram of perturbed data, or exact for the mixture, with the exact score and the error
``sigma_t |s_theta - grad log p_t|``). At small ``t`` the score is learned only where data lies,
not between the modes where samplers start: the reason for many noise levels (Song & Ermon 2019,
Section 3; paper, Section 3). ``trajectories_step_<step>.png``: reverse-SDE (Euler--Maruyama) and
probability-flow ODE paths from the same prior points (paper, Figure 2).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.data import TOY_GMM, make_toy_dataset
from scoresde_jax.io.plots import plot_score_fields, plot_trajectories, square_limit
from scoresde_jax.run.experiment import parse_floats, restore_experiment
from scoresde_jax.sampling import ode_trajectory, reverse_sde_trajectory

log = logging.getLogger(__name__)


def _histogram_log_density(points: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """log of a histogram density of ``points`` on the cell centres ``grid`` (rows: y)."""
    step = grid[1] - grid[0]
    edges = np.concatenate([grid - step / 2, grid[-1:] + step / 2])
    hist, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=(edges, edges))
    hist = hist / (len(points) * step**2)
    return np.log(np.maximum(hist, 1e-12))


def toy_figures(config, workdir: str) -> dict:
    """The module's pictures of the newest checkpoint (``config.figures``: what is drawn;
    ``config.latent``: the ODE solver); returns paths and (mixture) score errors."""
    d = config.data
    if d.get("dataset_kind", "image") != "toy" or d.get("dim", None) != 2:
        raise ValueError(
            f"--mode toy_figures draws 2-D score fields and paths; dataset {d.dataset!r} is not a "
            "2-D toy set. Use a config from configs/toy/ (images: --mode sample, encode, "
            "interpolate or temperature)."
        )
    fc, lc = config.figures, config.latent
    times = parse_floats(fc.score_times, "figures.score_times")
    exp, state, step = restore_experiment(config, workdir)
    # A few thousand 2-D points: one device is plenty, and fetching the replicated parameters
    # to the host keeps these small programs off the multi-device mesh.
    params = jax.device_get(state.ema_params)
    sde, eps = exp.sde, float(config.sampling.eps)
    if any(not 0 < t <= sde.T for t in times):
        raise ValueError(f"figures.score_times={fc.score_times!r}: every time must be in (0, T]")
    out_dir = os.path.join(workdir, "figures")
    is_main = jax.process_index() == 0
    if is_main:
        os.makedirs(out_dir, exist_ok=True)
    name = d.dataset
    data = make_toy_dataset(name, 5000, d.seed + 1)
    key = jax.random.fold_in(exp.eval_key, 4 * 10**6 + step)
    exact_fn = TOY_GMM.score_fn(sde) if name == "gmm" else None
    t0 = time.perf_counter()

    # (a) Score fields: arrows on a coarse grid, density and error on a fine one.
    lim = square_limit(data)
    fine = np.linspace(-lim, lim, 120)
    fx, fy = np.meshgrid(fine, fine)
    fine_xy = np.stack([fx.ravel(), fy.ravel()], -1).astype(np.float32)
    coarse = np.linspace(-lim, lim, fc.arrows + 2)[1:-1]
    cx, cy = np.meshgrid(coarse, coarse)
    arrow_xy = np.stack([cx.ravel(), cy.ravel()], -1).astype(np.float32)

    @jax.jit
    def fields(params, x, t):
        tt = jnp.full((x.shape[0],), t, jnp.float32)
        sigma = sde.marginal_coeffs(tt)[1][:, None]
        learned = sigma * exp.score_fn(params)(x, tt)
        exact = sigma * exact_fn(x, tt) if exact_fn is not None else jnp.zeros_like(x)
        logp = TOY_GMM.marginal_logpdf(sde, x, tt) if exact_fn is not None else tt
        return learned, exact, logp

    learned_a, exact_a, log_density, error = [], [], [], []
    rng = np.random.default_rng(d.seed)
    report_errors = {}
    # Without a closed form, the density comes from a histogram of perturbed data.
    big = make_toy_dataset(name, 200_000, d.seed + 2) if exact_fn is None else None
    for t in times:
        la, ea, _ = fields(params, jnp.asarray(arrow_xy), t)
        lf, ef, lp = (np.asarray(a) for a in fields(params, jnp.asarray(fine_xy), t))
        learned_a.append(np.asarray(la))
        exact_a.append(np.asarray(ea))
        g = len(fine)
        if exact_fn is not None:
            log_density.append(lp.reshape(g, g))
            err = np.linalg.norm(lf - ef, axis=-1)
            error.append(err.reshape(g, g))
            # The error where the data is (weighted by p_t) and in the low-density region.
            w = np.exp(lp - lp.max())
            low = lp < lp.max() - math.log(1e4)
            report_errors[f"t={t:g}"] = {
                "error_weighted_by_density": float((w * err).sum() / w.sum()),
                "error_low_density": float(err[low].mean()) if low.any() else None,
                "low_density_fraction_of_box": float(low.mean()),
            }
        else:
            alpha, sigma = (float(v[0]) for v in sde.marginal_coeffs(jnp.full((1,), t)))
            pert = alpha * big + sigma * rng.standard_normal(big.shape).astype(np.float32)
            log_density.append(_histogram_log_density(pert, fine))
    title = f"{name}: {config.training.sde}, step {step}"
    score_png = os.path.join(out_dir, f"score_field_step_{step}.png")
    if is_main:
        plot_score_fields(
            score_png,
            times=times,
            grid=fine,
            log_density=np.stack(log_density),
            arrows_xy=arrow_xy,
            learned=np.stack(learned_a),
            exact=np.stack(exact_a) if exact_fn is not None else None,
            error=np.stack(error) if exact_fn is not None else None,
            density_label="exact" if exact_fn is not None else "histogram of perturbed data",
            title=title + (" (learned vs exact score)" if exact_fn is not None else ""),
        )
    log.info("score fields at t = %s done in %.1f s", times, time.perf_counter() - t0)

    # (b) Trajectories of the reverse SDE and of the probability-flow ODE from the same starts.
    t1 = time.perf_counter()
    k_prior, k_noise = jax.random.split(key)
    x_T = sde.prior_sample(k_prior, (fc.num_trajectories, 2))
    ode_ts = np.linspace(sde.T, eps, 201)

    @jax.jit
    def paths(params, x_T, key):
        score_fn = exp.score_fn(params)
        sde_tr = reverse_sde_trajectory(sde, score_fn, key, x_T, fc.sde_steps, eps=eps)
        ode_tr = ode_trajectory(
            sde, score_fn, x_T, ode_ts, rtol=lc.rtol, atol=lc.atol, solver=lc.ode_solver
        )
        return sde_tr, ode_tr

    sde_tr, ode_tr = jax.device_get(paths(params, x_T, k_noise))
    traj_png = os.path.join(out_dir, f"trajectories_step_{step}.png")
    if is_main:
        plot_trajectories(
            traj_png,
            data=data,
            sde_ts=np.asarray(sde_tr.ts),
            sde_xs=np.asarray(sde_tr.xs),
            ode_ts=np.asarray(ode_tr.ts),
            ode_xs=np.asarray(ode_tr.xs),
            title=f"{title}: {fc.num_trajectories} paths from the same prior points",
        )
    seconds = time.perf_counter() - t1
    log.info("trajectories done in %.1f s (ODE: %d evaluations)", seconds, int(ode_tr.nfe))
    report = {
        "step": step,
        "dataset": name,
        "sde": config.training.sde,
        "score_times": times,
        "score_field_png": score_png,
        "trajectories_png": traj_png,
        "sde_steps": int(fc.sde_steps),
        "ode_nfe": int(ode_tr.nfe),
    }
    if exact_fn is not None:
        report["score_errors"] = report_errors
        for kind, tr in (("sde", sde_tr), ("ode", ode_tr)):
            logp = TOY_GMM.logpdf(jnp.asarray(tr.xs[-1]))
            report[f"{kind}_endpoints_mean_true_logp"] = float(np.mean(np.asarray(logp)))
    if is_main:
        with open(os.path.join(out_dir, f"report_step_{step}.json"), "w") as f:
            json.dump(report, f, indent=2)
    return report
