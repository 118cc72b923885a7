"""Test-wide JAX settings: strict rank promotion so shape bugs surface as errors, and one
persistent compilation cache for the whole run (this process and the command-line runs it
starts), so the many tests that compile the same tiny networks compile each only once."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if not os.environ.get("SCORESDE_COMPILATION_CACHE"):
    _cache_dir = tempfile.mkdtemp(prefix="scoresde-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ["SCORESDE_COMPILATION_CACHE"] = _cache_dir

import jax  # noqa: E402

from scoresde_jax.run import compile_cache  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
compile_cache.enable(min_compile_time_s=0.5)
