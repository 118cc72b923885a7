"""The XLA:CPU defaults set on import (``scoresde_jax.xla_flags``): added when the user has not
named the flag, the user's value kept, off by ``$SCORESDE_XLA_DEFAULTS``, and in effect in a
fresh process (the compiled convolution leaves YNNPACK)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from scoresde_jax import xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def test_added_when_absent_and_kept_once():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert xla_flags.apply(env) == [FLAG]
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {FLAG}"
    assert xla_flags.apply(env) == []  # a second import adds nothing
    assert env["XLA_FLAGS"].count("ynn_fusion_type") == 1
    empty: dict[str, str] = {}
    xla_flags.apply(empty)
    assert empty["XLA_FLAGS"] == FLAG


@pytest.mark.parametrize(
    "given",
    [
        "--xla_cpu_experimental_ynn_fusion_type=individual_convolution",
        "--xla_force_host_platform_device_count=2 xla_cpu_experimental_ynn_fusion_type=dot",
    ],
)
def test_the_users_value_wins(given):
    env = {"XLA_FLAGS": given}
    assert xla_flags.apply(env) == []
    assert env["XLA_FLAGS"] == given


@pytest.mark.parametrize("off", ["off", "OFF", "0", "false"])
def test_off_leaves_xla_defaults(off):
    env = {xla_flags.ENV: off}
    assert xla_flags.apply(env) == []
    assert "XLA_FLAGS" not in env


_PROBE = """
import os, jax, jax.numpy as jnp, scoresde_jax
x, k = jnp.ones((2, 16, 16, 32)), jnp.ones((3, 3, 32, 32))
dims = ("NHWC", "HWIO", "NHWC")
conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dims)
text = jax.jit(conv).lower(x, k).compile().as_text()
print(os.environ.get("XLA_FLAGS", ""), "|", "ynn_fusion" in text)
"""


@pytest.mark.parametrize("setting", ["", "off"])
def test_in_effect_in_a_fresh_process(setting):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    if setting:
        env[xla_flags.ENV] = setting
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    flags, in_ynn = out.stdout.strip().rsplit("|", 1)
    if setting == "off":
        assert flags.strip() == "" and in_ynn.strip() == "True"
    else:
        assert FLAG in flags and in_ynn.strip() == "False"


def test_solve_options_unless_off_or_the_user_chose():
    ours = {"XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {FLAG}"}  # as apply() left it
    assert xla_flags.solve_compiler_options(ours) == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert xla_flags.solve_compiler_options({}) == xla_flags.SOLVE_OPTIONS
    given = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
    assert xla_flags.solve_compiler_options(given) is None
    assert xla_flags.solve_compiler_options({**ours, xla_flags.ENV: "off"}) is None


def test_likelihood_compiled_with_the_solve_options_leaves_ynnpack_same_numbers():
    """The options reach XLA (no YNNPACK fusion is left in the compiled solve, where XLA's
    default fuses the network's matrix products) and change no number beyond float rounding."""
    import jax
    import jax.numpy as jnp

    from scoresde_jax.core.likelihood import log_likelihood
    from scoresde_jax.core.sde import get_sde

    sde = get_sde("vpsde")
    w1 = jax.random.normal(jax.random.key(0), (16, 64)) / 4
    w2 = jax.random.normal(jax.random.key(1), (64, 16)) / 8

    def score_fn(x, t):
        return jnp.tanh(x @ w1 + t[:, None]) @ w2 - x

    def fn(x, key):
        return log_likelihood(sde, score_fn, x, key, rtol=1e-4, atol=1e-4)

    x = jax.random.normal(jax.random.key(2), (4, 16))
    key = jax.random.key(3)
    default = jax.jit(fn).lower(x, key).compile()
    options = xla_flags.solve_compiler_options({})
    solve = jax.jit(fn, compiler_options=options).lower(x, key).compile()
    assert "ynn_fusion" in default.as_text() and "ynn_fusion" not in solve.as_text()
    a, b = default(x, key), solve(x, key)
    assert int(a.nfe) == int(b.nfe) > 10
    np.testing.assert_allclose(b.logp, a.logp, rtol=1e-5)
