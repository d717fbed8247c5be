#!/usr/bin/env bash
# bench/gpu/run_on_device.sh: everything the GPU backend needs from one device call, in the repo
# root there, with the binaries and their Debian .so files carried in .gpu-bundle (made by
# bench/gpu/make_bundle.sh here). Order: GPU tests, expert/blend benchmark, HF-vs-engine
# end-to-end, then compute-sanitizer (slowest, last). Every step has its own timeout; logs go to
# $OUT (summary.txt, expert_bench.tsv, logs.tar.gz).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT" /tmp/gpu-logs
LOGS=/tmp/gpu-logs
BUNDLE=$PWD/.gpu-bundle
export LD_LIBRARY_PATH=$BUNDLE/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export EXPERTMESH_SOURCE_DIR=$PWD PYTHONUNBUFFERED=1
SUMMARY=$OUT/summary.txt
only=${1:-all}
log() { echo "$*" | tee -a "$SUMMARY"; }
step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  log "=== $name: rc=$rc in $(( $(date +%s) - t0 ))s"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[gpu-|FAILED  \]|Failure|ERROR SUMMARY|========= (Invalid|Race|Error)|FATAL" \
    "$LOGS/$name.log" | head -40 | tee -a "$SUMMARY"
  tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null
}
log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader)"
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)

if [[ $only == all || $only == tests ]]; then
  for t in cuda_ops_test cuda_blend_test cuda_experts_test gpu_model_test gpu_fixture_test; do
    step "$t" 90 "$BUNDLE/bin/$t" --gtest_color=no
  done
fi
if [[ $only == all || $only == bench ]]; then
  step expert_bench 150 "$BUNDLE/bin/gpu_expert_bench" --tsv "$OUT/expert_bench.tsv"
  grep -E "ceiling|blend|experts" "$LOGS/expert_bench.log" | tee -a "$SUMMARY" >/dev/null
  step hf_baseline 200 python3 bench/gpu/hf_baseline.py --out /tmp/v2lite-4layers
  grep -E "^HF" "$LOGS/hf_baseline.log" | tee -a "$SUMMARY" >/dev/null
  step model_bench 120 "$BUNDLE/bin/gpu_model_bench" /tmp/v2lite-4layers
  sed -n '/== end-to-end summary/,$p' "$LOGS/model_bench.log" | tee -a "$SUMMARY" >/dev/null
  grep -E "^loaded|^loading" "$LOGS/model_bench.log" | tail -3 | tee -a "$SUMMARY" >/dev/null
fi
if [[ $only == all || $only == sanitizer ]] && [[ -n $SANITIZER ]]; then
  step memcheck_experts 60 "$SANITIZER" --tool memcheck --error-exitcode 9 "$BUNDLE/bin/cuda_experts_test" \
    --gtest_filter=-*ManySlots*
  step memcheck_model 60 "$SANITIZER" --tool memcheck --error-exitcode 9 "$BUNDLE/bin/gpu_model_test"
  step racecheck_model 60 "$SANITIZER" --tool racecheck --error-exitcode 9 "$BUNDLE/bin/gpu_model_test" \
    --gtest_filter=*V3*
  step racecheck_experts 60 "$SANITIZER" --tool racecheck --error-exitcode 9 "$BUNDLE/bin/cuda_experts_test" \
    --gtest_filter=*Fp8*:*Float32*
  step memcheck_blend 40 "$SANITIZER" --tool memcheck --error-exitcode 9 "$BUNDLE/bin/cuda_blend_test"
  step memcheck_fixture 60 "$SANITIZER" --tool memcheck --error-exitcode 9 "$BUNDLE/bin/gpu_fixture_test" \
    --gtest_filter=*v3_tiny*:*v2_lite*
fi
log "done"
