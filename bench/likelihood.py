"""Likelihood: diffrax on the device (one jitted solve) vs scipy RK45 on the host.

Both paths compute bits/dim of the same 8-bit data with the same score network, the same
dequantization noise and the same Hutchinson probes, at the same rtol/atol:

* ``device``: :func:`scoresde_jax.core.likelihood.bits_per_dim` under ``jax.jit``; the adaptive
  solver loop runs inside the compiled program.
* ``host``: the original score_sde design. The state lives in a float64 numpy vector on the host;
  ``scipy.integrate.solve_ivp(method="RK45")`` calls a jitted drift + divergence function for
  every right-hand-side evaluation and copies the result back to numpy.

The network is :class:`scoresde_jax.models.MLPScore` with random weights, perturbed (see
:func:`make_model`) so that the probability-flow ODE is genuinely non-linear in ``x`` yet smooth in
``t``, rather than the near-linear ODE of a fresh initialization.

Each configuration prints one JSON object: medians over ``--repeats`` timed runs after one
warm-up run per path (the warm-up includes compilation, reported separately).

Examples::

    python bench/likelihood.py                            # 2-D exact trace and 3072-D Hutchinson
    python bench/likelihood.py --dim 3072 --batch 4 --repeats 5 --solver dopri5
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy
import scipy.integrate

from scoresde_jax import xla_flags
from scoresde_jax.core.likelihood import (
    LIKELIHOOD_ODE,
    bits_per_dim,
    dequantize,
    drift_and_divergence,
    logp_to_bpd,
    sample_probes,
)
from scoresde_jax.core.score import get_score_fn
from scoresde_jax.core.sde import VESDE, get_sde
from scoresde_jax.models import MLPScore

# Per-dimension defaults: low-dimensional data uses the exact trace, image-sized data Hutchinson.
_EXACT_TRACE_MAX_DIM = 16


def _default_batch(dim: int) -> int:
    return 256 if dim <= _EXACT_TRACE_MAX_DIM else 4


def _default_hidden(dim: int) -> tuple[int, ...]:
    return (256, 256, 256) if dim <= _EXACT_TRACE_MAX_DIM else (1024, 1024, 1024)


def make_model(
    sde, dim: int, hidden, key, *, init_scale: float, out_scale: float, time_scale: float
):
    """A randomly initialized MLPScore whose weights are perturbed into a non-linear regime.

    * Hidden-layer kernels are multiplied by ``init_scale`` and all biases redrawn from
      ``N(0, 0.5^2)``, so pre-activations reach SiLU's curved range and the drift is a genuinely
      non-linear function of ``x`` (a fresh LeCun-normal MLP is close to linear).
    * The two time-embedding layers are multiplied by ``time_scale``. The sinusoidal embedding of
      ``999 t`` carries frequencies up to ~1000 rad per unit time; with random weights the drift
      oscillates in ``t`` at that rate (a trained network's does not), and the adaptive solver
      then needs thousands of steps or runs out of them. Damping keeps the ODE about as smooth
      in ``t`` as a trained model's.
    * The output layer is multiplied by ``out_scale`` so the score stays of moderate size.
    """
    ve = isinstance(sde, VESDE)
    model = MLPScore(
        hidden=tuple(hidden),
        embedding="fourier" if ve else "positional",
        scale_by_sigma=ve,
    )
    init_key, perturb_key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1, dim)), jnp.ones((1,)))["params"]
    # MLPScore's Dense layers in call order: two time-embedding layers, the hidden layers, output.
    names = sorted(
        (n for n in params if n.startswith("Dense_")), key=lambda n: int(n.split("_")[1])
    )
    scales = {n: init_scale for n in names[2:-1]}
    scales.update({n: time_scale for n in names[:2]}, **{names[-1]: out_scale})
    keys = dict(zip(names, jax.random.split(perturb_key, len(names)), strict=True))
    params = dict(params)
    for name in names:
        bias = 0.5 * jax.random.normal(keys[name], params[name]["bias"].shape)
        if name == names[-1]:
            bias = out_scale * bias
        params[name] = {"kernel": scales[name] * params[name]["kernel"], "bias": bias}
    return model, {"params": params}


def make_score_fn(sde, model, params):
    return get_score_fn(sde, lambda x, labels: model.apply(params, x, labels), continuous=True)


def run_config(args, dim: int, batch: int) -> dict:
    sde = get_sde(args.sde)
    exact = {"auto": dim <= _EXACT_TRACE_MAX_DIM, "exact": True, "hutchinson": False}[args.trace]
    hidden = args.hidden or _default_hidden(dim)
    key = jax.random.key(args.seed)
    model_key, data_key, ll_key = jax.random.split(key, 3)
    model, params = make_model(
        sde,
        dim,
        hidden,
        model_key,
        init_scale=args.init_scale,
        out_scale=args.out_scale,
        time_scale=args.time_scale,
    )
    num_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    x01 = jax.random.randint(data_key, (batch, dim), 0, 256).astype(jnp.float32) / 255
    ode_options = dict(rtol=args.rtol, atol=args.atol, eps=args.eps)
    hutchinson = dict(num_probes=args.num_probes, noise=args.noise)

    options = {"package": xla_flags.solve_compiler_options(), "xla": None}

    # --- (a) diffrax on the device, one jitted call -------------------------------------------
    @functools.partial(jax.jit, compiler_options=options[args.compile])
    def device_bpd(params, x01, key):
        score_fn = make_score_fn(sde, model, params)
        return bits_per_dim(
            sde,
            score_fn,
            x01,
            key,
            centered=True,
            exact_trace=exact,
            solver=args.solver,
            **hutchinson,
            **ode_options,
        )

    def run_device():
        out = device_bpd(params, x01, ll_key)
        return jax.block_until_ready(out)

    # --- (b) scipy RK45 on the host ------------------------------------------------------------
    # Same inputs as bits_per_dim draws them: key split into (dequantization, probes).
    dequant_key, probe_key = jax.random.split(ll_key)
    y = 2 * dequantize(dequant_key, x01) - 1
    probes = None if exact else sample_probes(probe_key, y.shape, **hutchinson)

    def drift_div_fn(params, x, t, probes):
        score_fn = make_score_fn(sde, model, params)
        t_vec = jnp.full((x.shape[0],), t, dtype=x.dtype)
        return drift_and_divergence(sde, score_fn, x, t_vec, probes)

    if args.host_params == "constant":
        # Weights baked into the executable: XLA:CPU then prepares them once at compile time,
        # while weights passed as arguments are re-prepared on every call (~2-3x slower per
        # call at batch 4 for the 3072-D MLP). The faster variant makes the stronger baseline.
        drift_div = jax.jit(
            lambda x, t: drift_div_fn(params, x, t, probes),
            compiler_options=options[args.host_compile],
        )
    else:
        jitted = jax.jit(drift_div_fn, compiler_options=options[args.host_compile])
        drift_div = lambda x, t: jitted(params, x, t, probes)  # noqa: E731

    def rhs(t, state):
        x = jnp.asarray(state[:-batch].reshape(batch, dim), dtype=jnp.float32)
        drift, div = drift_div(x, jnp.float32(t))
        return np.concatenate([np.asarray(drift).reshape(-1), np.asarray(div)])

    def run_host():
        init = np.concatenate([np.asarray(y, np.float64).reshape(-1), np.zeros(batch)])
        sol = scipy.integrate.solve_ivp(
            rhs, (args.eps, sde.T), init, rtol=args.rtol, atol=args.atol, method="RK45"
        )
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed: {sol.message}")
        z = sol.y[:-batch, -1].reshape(batch, dim)
        delta_logp = sol.y[-batch:, -1]
        logp = np.asarray(sde.prior_logp(jnp.asarray(z, jnp.float32))) + delta_logp
        bpd = np.asarray(logp_to_bpd(logp, dim, data_width=2.0))
        return bpd, sol.nfev

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    device_compile_s, dev = timed(run_device)
    host_warmup_s, _ = timed(run_host)
    device_times, host_times = [], []
    for _ in range(args.repeats):
        t_dev, dev = timed(run_device)
        t_host, (host_bpd, host_nfe) = timed(run_host)
        device_times.append(t_dev)
        host_times.append(t_host)

    dev_s = statistics.median(device_times)
    host_s = statistics.median(host_times)
    dev_nfe = int(dev.nfe)
    dev_bpd = np.asarray(dev.bpd, np.float64)
    return {
        "bench": "likelihood",
        "sde": sde.name,
        "dim": dim,
        "batch": batch,
        "divergence": "exact" if exact else f"hutchinson-{args.noise}-x{args.num_probes}",
        "hidden": list(hidden),
        "params": int(num_params),
        "init_scale": args.init_scale,
        "out_scale": args.out_scale,
        "time_scale": args.time_scale,
        "rtol": args.rtol,
        "atol": args.atol,
        "repeats": args.repeats,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "device": {
            "solver": f"diffrax.{args.solver}",
            "compiler_options": options[args.compile],
            "wall_s": dev_s,
            "nfe": dev_nfe,
            "s_per_nfe": dev_s / dev_nfe,
            "bpd_mean": float(dev_bpd.mean()),
            "first_call_s": device_compile_s,
        },
        "host": {
            "solver": "scipy.solve_ivp(RK45)",
            "params_passed_as": args.host_params,
            "compiler_options": options[args.host_compile],
            "wall_s": host_s,
            "nfe": int(host_nfe),
            "s_per_nfe": host_s / host_nfe,
            "bpd_mean": float(host_bpd.mean()),
            "first_call_s": host_warmup_s,
        },
        "host_over_device_time": host_s / dev_s,
        "host_over_device_s_per_nfe": (host_s / host_nfe) / (dev_s / dev_nfe),
        "bpd_diff_mean": float(dev_bpd.mean() - host_bpd.mean()),
        "bpd_diff_max_abs": float(np.max(np.abs(dev_bpd - host_bpd))),
        "jax": jax.__version__,
        "scipy": scipy.__version__,
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        # Other processes on a shared machine inflate wall times; record how busy it was.
        "loadavg_1min": os.getloadavg()[0],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, nargs="+", default=[2, 3072], help="data dimensions")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=None, help="one per --dim (default 256 / 4)"
    )
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--atol", type=float, default=None, help="defaults to --rtol")
    parser.add_argument("--eps", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sde", default="vpsde", choices=["vesde", "vpsde", "subvpsde"])
    parser.add_argument(
        "--solver",
        default=LIKELIHOOD_ODE.solver,
        help=f"diffrax solver of the device path (the library's default: {LIKELIHOOD_ODE.solver})",
    )
    parser.add_argument("--trace", default="auto", choices=["auto", "exact", "hutchinson"])
    parser.add_argument("--num-probes", type=int, default=1)
    parser.add_argument("--noise", default="rademacher", choices=["rademacher", "gaussian"])
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help="MLP widths")
    parser.add_argument("--init-scale", type=float, default=2.0, help="hidden kernels factor")
    parser.add_argument("--out-scale", type=float, default=0.3, help="output layer factor")
    parser.add_argument("--time-scale", type=float, default=0.05, help="time-embedding factor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--host-params",
        default="constant",
        choices=["constant", "argument"],
        help="host path: weights compiled into the jitted drift, or passed on every call",
    )
    for flag, who in (("--compile", "device"), ("--host-compile", "host")):
        parser.add_argument(
            flag,
            default="package",
            choices=["package", "xla"],
            help=f"{who} path's jax.jit compiler options: the package's for likelihood solves "
            "(scoresde_jax.xla_flags.solve_compiler_options) or XLA's defaults",
        )
    args = parser.parse_args(argv)
    if args.atol is None:
        args.atol = args.rtol
    batches = args.batch or [_default_batch(d) for d in args.dim]
    if len(batches) == 1:
        batches = batches * len(args.dim)
    if len(batches) != len(args.dim):
        parser.error("give one --batch per --dim (or a single one for all)")
    for dim, batch in zip(args.dim, batches, strict=True):
        print(json.dumps(run_config(args, dim, batch)), flush=True)


if __name__ == "__main__":
    main()
