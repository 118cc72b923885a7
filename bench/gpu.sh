#!/usr/bin/env bash
# The GPU run of bench/gpu.py, in one go and under 8 minutes on one NVIDIA GPU:
#
#   bash bench/gpu.sh                      # from the repository root, jax[cuda] installed
#   SCORE_SDE_PYTORCH=/path/to/score_sde_pytorch bash bench/gpu.sh     # with the reference
#   bash bench/gpu.sh --tiny               # tiny networks, any device (a smoke run)
#
# JSON lines on stdout, also written to $OUT/gpu.jsonl when $OUT is set, else to
# bench/results/gpu.jsonl (gpu_tiny.jsonl for --tiny); progress on stderr. Further arguments
# go to bench/gpu.py (python bench/gpu.py --help). Environment:
#   PYTHON                     the interpreter with jax (default: python, else python3)
#   SCORE_SDE_PYTORCH          a checkout of yang-song/score_sde_pytorch (for the reference row)
#   SCORE_SDE_PYTORCH_PYTHON   the interpreter with torch, if not $PYTHON
#   GPU_BENCH_TIMEOUT          hard limit of the whole run in seconds (default 475; the run's
#                              own budget, --budget_s, is 450)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-$(command -v python || command -v python3)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
limit=${GPU_BENCH_TIMEOUT:-475}
for arg in "$@"; do
  if [[ $arg == --tiny ]]; then limit=${GPU_BENCH_TIMEOUT:-900}; fi
done
echo "[gpu.sh] $python bench/gpu.py $* (at most ${limit} s)" >&2
exec timeout --kill-after=15 "$limit" "$python" bench/gpu.py "$@"
