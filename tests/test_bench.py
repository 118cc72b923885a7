"""The benchmark scripts keep running and keep printing the JSON they document."""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python bench/<script> args...`` on one CPU device; fails the test on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=dict(os.environ, XLA_FLAGS=""),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_likelihood_bench_smoke():
    proc = run_bench(
        "likelihood.py",
        *["--dim", "2", "--batch", "8", "--repeats", "1", "--hidden", "32", "32", "--rtol", "1e-3"],
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    row = rows[0]
    assert row["device"]["nfe"] > 0 and row["host"]["nfe"] > 0
    # Two independent solvers of the same ODE at rtol 1e-3 agree on bits/dim.
    assert abs(row["device"]["bpd_mean"] - row["host"]["bpd_mean"]) < 1e-2, row
    assert row["bpd_diff_max_abs"] < 1e-2, row


def test_train_bench_smoke():
    proc = run_bench(
        "train.py",
        *["--config", "configs/mnist/ddpmpp_vp.py", "--batch", "8", "--steps", "1"],
        *["--warmup", "0", "--host_devices", "2", "--override", "model.nf=8"],
        *["model.ch_mult=(1,)", "model.attn_resolutions=()", "model.num_res_blocks=1"],
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    row = rows[0]
    assert row["devices"] == 2 and row["global_batch"] == 8 and row["loss_finite"]
    assert row["steps_per_s"] > 0
    assert abs(row["images_per_s"] - 8 * row["steps_per_s"]) < 1e-9 * row["images_per_s"]


_FAKE_REF_BENCH = """
import json, sys
args = sys.argv[1:]
print("progress", file=sys.stderr)
print(json.dumps({"params": 7, "threads": 2, "host": {"torch": "fake"}, "argv": args,
                  "train": {"median_s": 2.0},
                  "sample_step": {"score_fn_forward": {"median_s": 0.5}}}))
"""


def test_model_bench_runs_the_reference_beside_ours(tmp_path):
    """``--ref_python``/``--ref_repo`` hand the same config, batch, repeats and overrides to
    ref_bench.py (a stand-in here, as torch is not installed) and divide ours by its times."""
    fake = tmp_path / "ref_bench.py"
    fake.write_text(_FAKE_REF_BENCH)
    overrides = ["model.ema_rate=0.99", "optim.lr=0.001"]
    proc = run_bench(
        "model.py",
        *["--config", "configs/toy/gmm.py", "--batch", "2", "--repeats", "1"],
        *["--warmup", "0", "--override", *overrides, "--ref_python", sys.executable],
        *["--ref_repo", str(tmp_path), "--ref_bench", str(fake)],
    )
    (row,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    command = row["reference"].pop("command")
    assert row["reference"] == {
        "forward_s": 0.5,
        "train_step_s": 2.0,
        "parameters": 7,
        "threads": 2,
        "torch": "fake",
    }
    assert command[0] == str(fake) and command[-3:] == ["--override", *overrides]
    for flag, value in (("--config", "configs/toy/gmm.py"), ("--batch", "2")):
        assert command[command.index(flag) + 1] == value
    assert command[command.index("--repo") + 1] == str(tmp_path)
    assert row["forward_ratio"] == pytest.approx(row["forward_s"] / 0.5)
    assert row["train_step_ratio"] == pytest.approx(row["train_step_s"] / 2.0)
    assert row["same_parameter_count"] is False and row["overrides"] == overrides
    assert row["loss_finite"] and row["forward_s"] > 0


_FAKE_REF_LIKELIHOOD = """
import json, os, sys
import numpy as np
args = sys.argv[1:]
value = lambda flag: args[args.index(flag) + 1]
out = {"threads": 2, "host": {"torch": "fake"}}
if "--save-weights" in args:  # the reference's initial weights: its output layer is all zeros
    sd = dict(np.load(os.path.join(os.environ["FIXTURE"], "state_dict.npz")))
    sd["all_modules.27.weight"] = np.zeros_like(sd["all_modules.27.weight"])
    np.savez(value("--save-weights"), **{"module." + k: v for k, v in sd.items()})
    out["train"] = {"median_s": 1.0}
else:
    sd = np.load(value("--load-weights"))
    if not np.any(sd["module.all_modules.27.weight"]):
        sys.exit("the likelihood run got the zero output layer")
    rng = np.random.default_rng(0)
    b = int(value("--batch"))
    data = rng.uniform(-1, 1, (b, 3, 32, 32)).astype(np.float32)
    probes = rng.choice([-1.0, 1.0], (b, 3, 32, 32)).astype(np.float32)
    np.savez(value("--save-likelihood-inputs"), data=data, hutchinson=probes,
             bpd=np.full(b, 5.0), nfev=np.array(10))
    out["likelihood"] = {"method": "RK45", "median_s": 3.0, "times_s": [3.0], "nfev": [10],
                         "params": 1771203}
print(json.dumps(out))
"""


def test_likelihood_reference_bench_plumbing(tmp_path):
    """bench/likelihood_reference.py with a stand-in ref_bench.py (torch is not installed): the
    reference's near-zero layers are redrawn before its likelihood run, its weights, data and
    probes reach our converted network, and the row compares bits/dim and times."""
    shared = pathlib.Path(os.environ.get("SCORESDE_SHARED", ROOT.parent / "shared"))
    fixture = shared / "fixtures" / "ddpmpp_vp_small"
    if not (fixture / "state_dict.npz").exists():
        pytest.skip(f"parity fixture {fixture} is absent; set SCORESDE_SHARED")
    fake = tmp_path / "ref_bench.py"
    fake.write_text(_FAKE_REF_LIKELIHOOD)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "likelihood_reference.py")]
        + ["--ref_python", sys.executable, "--ref_repo", str(tmp_path)]
        + ["--ref_bench", str(fake), "--batch", "1", "--repeats", "1"]
        + ["--rtol", "1e-2", "--atol", "1e-2", "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        env=dict(os.environ, XLA_FLAGS="", FIXTURE=str(fixture)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert row["weights_redrawn"] == ["module.all_modules.27.weight"]
    ours = row["ours"]
    assert ours["nfe"] > 0 and ours["compiler_options"] == {
        "xla_cpu_experimental_ynn_fusion_type": ""
    }
    (bpd,) = ours["bpd"]
    assert math.isfinite(bpd) and row["bpd_max_abs_diff"] == pytest.approx(abs(bpd - 5.0))
    assert row["reference"]["first_s"] == 3.0 and row["reference"]["first_nfev"] == 10
    assert row["speedup"] == pytest.approx(3.0 / ours["median_s"])
    command = row["reference"]["command"]
    assert command[command.index("--override") + 1 :] == ["model.nf=32", "model.num_res_blocks=1"]


def test_samplers_bench_smoke(tmp_path):
    out = tmp_path / "samplers.json"
    proc = run_bench(
        "samplers.py",
        *["--quick", "--problems", "gmm2d", "--out", str(out)],
        *["--samplers", "dpm_solver_pp_3m", "dpm_solver_adaptive_23"],
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    summary = next(r["summary"] for r in rows if "summary" in r)
    assert summary["reference"]["nfe"] == 1000 and summary["floor"]["sw"]["mean"] > 0
    report = json.loads(out.read_text())
    results = report["problems"][0]["results"]
    fixed = [r for r in results if r["sampler"] == "dpm_solver_pp_3m"]
    assert [r["nfe"] for r in fixed] == [10, 20]
    adaptive = [r for r in results if r["sampler"] == "dpm_solver_adaptive_23"]
    assert len(adaptive) == 2 and all(r["nfe"] > 0 for r in adaptive)
    # Converged probability-flow samples are exact up to sampling noise (n = 256 in --quick).
    assert all(r["sw"] < 0.5 and r["weight_tv"] < 0.2 for r in fixed[1:] + adaptive), results


def test_startup_bench_smoke():
    proc = run_bench("startup.py", "--config", "configs/toy/moons.py", "--runs", "cold,warm")
    row = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert row["cold"]["seconds"] > 0 and row["warm"]["seconds"] > 0
    # The warm run reads what the cold run compiled (at least the training step).
    assert row["cold"]["cache_hits"] == 0 and row["warm"]["cache_hits"] >= 1, row
    assert row["warm_over_cold"] == round(row["warm"]["seconds"] / row["cold"]["seconds"], 3)


def test_checkpoint_bench_smoke():
    proc = run_bench("checkpoint.py", "--mib", "4", "--leaves", "8", "--repeats", "1")
    row = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert row["state_mib"] == 4.0 and row["leaves"] == 9
    assert row["digest_s"] > 0 and row["save_s"] > 0 and row["verified_restore_s"] > 0


def test_data_bench_smoke(tmp_path):
    shared = pathlib.Path(os.environ.get("SCORESDE_SHARED", ROOT.parent / "shared"))
    cifar = shared / "data" / "cifar10_partial" / "cifar10_partial_exact.npz"
    sources = ["cifar10", "jpeg"] if cifar.exists() else ["jpeg"]
    proc = run_bench(
        "data.py",
        *["--sources", *sources, "--workers", "1", "2", "--batch", "8", "--warmup", "1"],
        *["--rounds", "2", "--round_s", "0.05", "--jpeg_images", "12", "--jpeg_size", "48"],
        *["--jpeg_width", "64", "--jpeg_dir", str(tmp_path / "jpeg"), "--cifar", str(cifar)],
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(r["source"], r["workers"]) for r in rows] == [(s, w) for s in sources for w in (1, 2)]
    assert len(list((tmp_path / "jpeg").glob("*.jpg"))) == 12
    for row in rows:
        size = 48 if row["source"] == "jpeg" else 32
        assert row["resolution"] == size and row["image_shape"] == [size, size, 3]
        assert row["global_batch"] == 8 and row["images_per_s"] > 0, row
        assert len(row["images_per_s_rounds"]) == 2 and row["cpu_count"] >= 1
        assert 0.0 <= row["value_range"][0] < row["value_range"][1] <= 1.0
        assert row["stages_ms"]["read"] >= 0 and row["stages_ms"]["batch"] > 0
    jpeg = rows[-1]["decode"]
    assert jpeg["format"] == "folder" and jpeg["native_shape"] == [48, 64, 3]
    assert "center crop" in jpeg["conversion"]


def _gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_peak_table_and_mfu():
    gpu = _gpu_bench()
    kinds = {
        "NVIDIA H100 80GB HBM3": "H100 SXM",
        "NVIDIA H100 PCIe": "H100 PCIe",
        "NVIDIA H100 NVL": "H100 NVL",
        "NVIDIA H200": "H200 SXM",
        "NVIDIA A100-SXM4-80GB": "A100",
        "NVIDIA A100-PCIE-40GB": "A100",
        "NVIDIA L4": "L4",
        "NVIDIA A10G": "A10G",
        "NVIDIA A10": "A10",
        "Tesla V100-SXM2-16GB": "V100 SXM2",
        "Tesla V100-PCIE-32GB": "V100 PCIe",
        "Tesla T4": "T4",
        "NVIDIA L40S": None,  # not an L4
        "cpu": None,
    }
    for kind, name in kinds.items():
        assert gpu.peak_entry(kind)[0] == name, kind
    h100 = gpu.mfu_fields("NVIDIA H100 80GB HBM3", "bfloat16", 989.4e12, 2.0, None)
    assert h100["mfu"] == pytest.approx(0.5) and h100["peak_tflops"] == 989.4
    f32 = gpu.mfu_fields("NVIDIA A100-SXM4-80GB", "float32", 19.5e12, 1.0, None)
    assert f32["mfu"] == pytest.approx(1.0) and f32["mfu_vs_tf32_peak"] == pytest.approx(0.125)
    for kind, dtype in (("cpu", "float32"), ("Tesla V100-SXM2-16GB", "bfloat16")):
        row = gpu.mfu_fields(kind, dtype, 1e12, 1.0, None)
        assert row["mfu"] is None and "--peak_tflops" in row["mfu_reason"], row
    assert gpu.mfu_fields("cpu", "float32", 3e12, 2.0, 3.0)["mfu"] == pytest.approx(0.5)
    # cost_analysis(): a dict, or a list of dicts in older jax versions.
    assert gpu.flops_of({"flops": 4.0}) == 4.0 and gpu.flops_of([{"flops": 1}, {"flops": 2}]) == 3


def test_gpu_bench_tiny(tmp_path):
    """``bash bench/gpu.sh --tiny`` on the CPU: every part prints its rows, the MFU comes from
    ``--peak_tflops`` (a CPU has no entry in the peak table) and the reference is skipped with
    the reason."""
    out = tmp_path / "gpu.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORE_SDE_PYTORCH")}
    # Generous limits: the run's own time guard must not skip parts on a slow machine.
    env.update(PYTHON=sys.executable, XLA_FLAGS="", GPU_BENCH_TIMEOUT="3300")
    cmd = ["bash", str(ROOT / "bench" / "gpu.sh"), "--tiny", "--configs", "ddpmpp"]
    cmd += ["--dtypes", "float32", "--peak_tflops", "2", "--budget_s", "3000", "--out", str(out)]
    cmd += ["--ref_repo", str(tmp_path)]  # torch is absent, or sees no CUDA device, here
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows == [json.loads(line) for line in out.read_text().splitlines()]
    by_part = {}
    for row in rows:
        assert row["bench"] == "gpu"
        by_part.setdefault(row["part"], []).append(row)
    (train,) = by_part["train"]
    assert train["dtype"] == "float32" and train["batch"] == 2 and train["loss_finite"]
    assert math.isfinite(train["images_per_s"]) and train["images_per_s"] > 0
    assert train["xla_flops_per_step"] > 0
    assert train["xla_flops_per_image"] == pytest.approx(train["xla_flops_per_step"] / 2)
    achieved = train["xla_flops_per_step"] / train["step_s_median"]
    assert train["mfu"] == pytest.approx(achieved / 2e12) and train["mfu"] > 0
    (ref,) = by_part["reference"]
    assert "torch" in ref["skipped"], ref
    samplers = {r["sampler"]: r for r in by_part["sample"]}
    assert set(samplers) == {"dpm_solver_pp", "pc"}
    for r in samplers.values():
        assert r["num_steps_run"] == r["num_steps_requested"] and r["nfe"] >= r["num_steps_run"]
        assert math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0
    (lik,) = by_part["likelihood"]
    assert lik["nfe"] > 0 and lik["evaluations_per_s"] > 0 and lik["bpd_finite"]
    assert math.isfinite(lik["bpd_mean"]) and lik["bpd_mean"] > 0
    (summary,) = by_part["summary"]
    assert summary["errors"] == [] and [s["part"] for s in summary["skipped"]] == ["reference"]
