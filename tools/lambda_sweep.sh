#!/usr/bin/env bash
# The λ sweep over the bundled parents: builds the engine tools (in BUILD_DIR, default build) if
# needed, then tools/lambda_sweep.py merges (1-λ)·prose + λ·code for λ = 0, 0.1, ..., 1 (routed
# experts only, and every tensor), evaluates held-out prose and code loss, a small δ sweep and
# greedy samples, and writes docs/lambda_sweep.md, docs/lambda_sweep.tsv and docs/lambda_sweep.png
# (needs gnuplot: apt-get install gnuplot-nox) plus the raw numbers in docs/lambda_sweep.json.
# About 10 minutes on 2 idle cores (30 evaluations of 62k tokens, ~19 s each); 25 minutes were
# measured on the shared, busy team machine.
# Usage: tools/lambda_sweep.sh [BUILD_DIR] [extra tools/lambda_sweep.py args, e.g. --lambdas 0,0.5,1]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
shift || true
if [[ ! -x "$build_dir/bin/expertmesh-merge" || ! -x "$build_dir/bin/expertmesh-eval" ||
      ! -x "$build_dir/bin/expertmesh-generate" ]]; then
  [[ -f "$build_dir/CMakeCache.txt" ]] || cmake -S . -B "$build_dir" -G Ninja -DEXPERTMESH_CUDA=OFF
  cmake --build "$build_dir" -j"$(nproc)" --target expertmesh-merge expertmesh-eval expertmesh-generate
fi
exec python3 tools/lambda_sweep.py --bin "$build_dir/bin" "$@"
