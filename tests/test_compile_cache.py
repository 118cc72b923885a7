"""The persistent compilation cache: where it lives, how it is turned off, and that a second
command-line run reads the training step back instead of compiling it again."""

import os
import pathlib
import subprocess
import sys

from scoresde_jax.run import compile_cache

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_resolve_flag_environment_default_and_off(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.resolve() == tmp_path / "xdg" / "scoresde_jax" / "jax"
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.resolve() == tmp_path / "env"
    assert compile_cache.resolve(str(tmp_path / "flag")) == tmp_path / "flag"  # the flag wins
    for off in ("off", "OFF", "none", "0"):
        assert compile_cache.resolve(off) is None
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.resolve() is None


def _enable_in_a_fresh_process(value, env):
    code = (
        "import jax; from scoresde_jax.run import compile_cache as c; "
        f"print(c.enable({value!r}), jax.config.jax_enable_compilation_cache)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_unwritable_or_off_turns_the_cache_off_and_the_run_goes_on(tmp_path):
    env = dict(os.environ)
    env.pop(compile_cache.ENV, None)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = _enable_in_a_fresh_process(str(blocker / "cache"), env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None", "False"]
    assert "Compilation cache off: cannot write" in proc.stderr
    assert "--compilation_cache=DIR" in proc.stderr
    proc = _enable_in_a_fresh_process("off", env)
    assert proc.stdout.split() == ["None", "False"] and proc.stderr == ""
    proc = _enable_in_a_fresh_process(str(tmp_path / "new" / "dir"), env)
    assert proc.stdout.split() == [str(tmp_path / "new" / "dir"), "True"]


def test_second_run_reads_the_training_step_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, XLA_FLAGS="", JAX_LOG_COMPILES="1")

    def train(workdir, *extra, env=env):
        return subprocess.run(
            [
                sys.executable,
                str(ROOT / "main.py"),
                "--config",
                str(ROOT / "configs/toy/moons.py"),
                "--workdir",
                str(tmp_path / workdir),
                "--config.training.n_iters=2",
                "--config.training.n_jitted_steps=1",
                "--config.training.snapshot_sampling=False",
                "--config.training.eval_freq=1000",
                *extra,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )

    first = train("one", f"--compilation_cache={cache}")
    assert first.returncode == 0, first.stderr[-3000:]
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert entries, "nothing was written to the cache"
    assert "Persistent compilation cache hit" not in first.stderr
    second = train("two", f"--compilation_cache={cache}")
    assert second.returncode == 0, second.stderr[-3000:]
    hits = [line for line in second.stderr.splitlines() if "compilation cache hit" in line]
    assert any("step" in line for line in hits), second.stderr[-3000:]
    # Turned off by the flag, with the variable naming the filled cache: nothing is read or
    # written.
    before = sorted(p.name for p in cache.iterdir())
    third = train("three", "--compilation_cache=off", env={**env, compile_cache.ENV: str(cache)})
    assert third.returncode == 0, third.stderr[-3000:]
    assert "compilation cache hit" not in third.stderr
    assert sorted(p.name for p in cache.iterdir()) == before
