#!/usr/bin/env bash
# bench/gpu/run_on_device.sh [all|check|compare|model|iterate|profile|experts|short|tiny|distributed|followup|validate|confirm|stalls|patterns|sizes|prefill|buckets]: the GPU backend's device
# call, in the repo root there, from .gpu-bundle/bundle.tar.xz (made here by
# bench/gpu/make_bundle.sh; carry [".gpu-bundle"]).
#   check: GPU tests, the GPU services test, the quick expert benchmark, HF-vs-engine end to end,
#          memcheck of the new kernels.
#   compare: the changed kernels' GPU tests and benchmarks beside a baseline build's benchmarks.
#   model: the GPU model's tests (in-process and as services), memcheck, end-to-end benchmark.
#   iterate: a development round (kernel and model tests, expert and end-to-end benchmarks, ncu
#            sections of one expert kernel).
#   profile: the expert tests and benchmark, per-kernel times (ncu) of the expert pipeline at 1 and
#            16 tokens and of one batch-1 decode step.
#   experts: the expert kernels' tests (incl. the few-token kernels in a CUDA graph), memcheck and
#            racecheck of the few-token kernels, the decode and prefill expert benchmark.
#   confirm: the few-token and batched expert tests, decode speeds, row buckets (uniform and
#          skewed routing), the model tests (~2 minutes).
#   stalls: ncu of the few-token kernels at 1 token (V3 FP8 and bf16) with stall sampling by source
#          line, scheduler and memory tables, then the decode read pattern's own speed (~1 minute).
#   patterns: the decode read pattern (a warp per weight row) vs a flat stream of the same bytes,
#          beside the few-token decode (~1 minute).
#   sizes: reads and copies from the decode's sizes to 1 GiB (loads and bulk copies), prefill's
#          cuBLAS product forms (~1 minute).
#   prefill: the expert, FP8-product and model tests, prefill speeds at 256-16384 tokens (one
#          padded batch, the planned buckets at 40 and 11.5 us a bucket), with .gpu-bundle-base (a
#          baseline build's bundle, or only its gpu_expert_bench and the libraries that needs: the
#          carry limit is 64 MiB) its V2-Lite prefill alternating with this build's, FP8 batches of
#          8-256 tokens (W8A8 beside the tensor-core kernels), every kernel of one 4096-token
#          V2-Lite call (ncu), memcheck of the batched path's tests (~3 minutes).
#   buckets: the batched path's bucket tests and its skewed-routing prefill speed (~2 minutes).
#   validate: the expert tests, decode speeds (few-token kernels, one or two warps per weight row),
#          racecheck of the split rows, ncu of the few-token FP8 kernels at 1 token, prefill speeds
#          (uniform and skewed routing), then the model and services tests.
#   distributed: on a machine of several GPUs, the services test and the services benchmark with
#          attention-svc on GPU 0 and one expert shard on each other GPU (batches 1, 16, 64, 128).
#   all:   GPU tests, GPU services test, expert/blend benchmark, HF-vs-engine end to end, services
#          on the GPU (throughput), the CPU services benchmark on the machine's cores, sanitizers.
# Every step has its own timeout; a summary goes to $OUT/summary.txt, tables to $OUT/*.md|tsv,
# every log to $OUT/logs.tar.gz.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mode=${1:-all}
mkdir -p "$OUT" /tmp/gpu-logs
LOGS=/tmp/gpu-logs
BUNDLE=/tmp/gpu-bundle
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
tar -C "$BUNDLE" -xJf .gpu-bundle/bundle.tar.xz || { echo "no bundle"; exit 1; }
export LD_LIBRARY_PATH=$BUNDLE/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export EXPERTMESH_SOURCE_DIR=$PWD EXPERTMESH_BINARY_DIR=$BUNDLE PYTHONUNBUFFERED=1
export GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS=100
SUMMARY=$OUT/summary.txt
START=$(date +%s)
log() { echo "$*" | tee -a "$SUMMARY"; }
step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  log "=== $name: rc=$rc in $(( $(date +%s) - t0 ))s (at $(( $(date +%s) - START ))s)"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[gpu-|FAILED  \]|Failure|Expected|Which is|ERROR SUMMARY|========= (Invalid|Race|Error|Program)|FATAL|^bench: .*(tok/s|FAILED)" \
    "$LOGS/$name.log" | head -40 | tee -a "$SUMMARY"
  tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null
}
bench_rows() {  # bench_rows NAME: a gpu_expert_bench step's ceiling and expert rows into the summary
  grep -E "^(ceiling|experts)" "$LOGS/$1.log" | cut -f2-6 | tee -a "$SUMMARY" >/dev/null
}
log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader); $(nproc) cores"
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
B=$BUNDLE/bin

if [[ $mode == compare ]]; then
  # The changed code's GPU tests, then its benchmarks beside the same benchmarks of a baseline
  # build (.gpu-bundle-base/bundle.tar.xz: gpu_expert_bench and gpu_model_bench of the commit
  # before the change; carry it too), in the same call on the same GPU.
  BASE=/tmp/gpu-base
  rm -rf "$BASE" && mkdir -p "$BASE" && tar -C "$BASE" -xJf .gpu-bundle-base/bundle.tar.xz || { log "no base bundle"; exit 1; }
  for t in cuda_ops_test cuda_experts_test gpu_model_test gpu_fixture_test; do step "$t" 150 "$B/$t" --gtest_color=no; done
  step expert_bench 200 "$B/gpu_expert_bench" --tsv "$OUT/expert_bench.tsv"
  grep -E "^experts" "$LOGS/expert_bench.log" | grep -E "direct|auto" | grep -E "tokens (1|4|16|64|128|256) " | cut -f2-5 \
    | tee -a "$SUMMARY" >/dev/null
  step base_expert_bench_quick 60 env LD_LIBRARY_PATH="$BASE/lib:/usr/local/cuda/lib64" "$BASE/bin/gpu_expert_bench" --quick \
    --tsv "$OUT/base_expert_bench_quick.tsv"
  grep -E "^experts" "$LOGS/base_expert_bench_quick.log" | grep -E "direct-mma\s|auto" | cut -f2-5 | sed 's/^/base: /' \
    | tee -a "$SUMMARY" >/dev/null
  step hf_baseline 200 python3 bench/gpu/hf_baseline.py --out /tmp/v2lite-4layers
  grep -E "^HF" "$LOGS/hf_baseline.log" | tee -a "$SUMMARY" >/dev/null
  step model_bench 150 "$B/gpu_model_bench" /tmp/v2lite-4layers
  sed -n '/== end-to-end summary/,$p' "$LOGS/model_bench.log" | tee -a "$SUMMARY" >/dev/null
  step base_model_bench 150 env LD_LIBRARY_PATH="$BASE/lib:/usr/local/cuda/lib64" "$BASE/bin/gpu_model_bench" \
    /tmp/v2lite-4layers
  sed -n '/== end-to-end summary/,$p' "$LOGS/base_model_bench.log" | sed 's/^/base: /' | tee -a "$SUMMARY" >/dev/null
  log "done (compare) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == model ]]; then
  # A round on the GPU model alone: its tests (vs the CPU engine and the fixtures, in-process and
  # as services), memcheck, and the end-to-end benchmark against HF.
  for t in cuda_ops_test gpu_model_test gpu_micro_batch_test gpu_fixture_test; do step "$t" 150 "$B/$t" --gtest_color=no; done
  step gpu_services_test 200 "$B/gpu_services_test" --gtest_color=no
  [[ -n $SANITIZER ]] && step memcheck_model 60 "$SANITIZER" --tool memcheck --error-exitcode 9 "$B/gpu_model_test"
  step hf_baseline 200 python3 bench/gpu/hf_baseline.py --out /tmp/v2lite-4layers
  step model_bench 150 "$B/gpu_model_bench" /tmp/v2lite-4layers
  sed -n '/== end-to-end summary/,$p' "$LOGS/model_bench.log" | tee -a "$SUMMARY" >/dev/null
  log "done (model) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == distributed ]]; then
  log "GPUs: $(nvidia-smi --query-gpu=index,name --format=csv,noheader | tr '\n' ';')"
  step gpu_services_test 200 "$B/gpu_services_test" --gtest_color=no
  step services_bench 420 "$B/gpu_services_bench" --bin-dir="$BUNDLE" --work-dir=/tmp/services-bench \
    --sequences=1,16,64,128 --markdown="$OUT/services_bench.md"
  cat "$OUT/services_bench.md" >>"$SUMMARY" 2>/dev/null
  log "done (distributed) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == followup ]]; then  # after a fix: W8A8, float32 services (micro-batches too), expert and model tests, speeds
  step cuda_fp8_products_test 60 "$B/cuda_fp8_products_test" --gtest_color=no
  grep -E "^W8A8" "$LOGS/cuda_fp8_products_test.log" | tee -a "$SUMMARY" >/dev/null
  step gpu_services_test 150 "$B/gpu_services_test" --gtest_color=no --gtest_filter=*Float32*
  step cuda_experts_test 120 "$B/cuda_experts_test" --gtest_color=no
  step gpu_model_test 60 "$B/gpu_model_test" --gtest_color=no
  step gpu_micro_batch_test 45 "$B/gpu_micro_batch_test" --gtest_color=no
  step expert_bench 60 "$B/gpu_expert_bench" --v3-only --no-blend --tokens 1,16,4096 --variants \
    few-tokens,cublas-fp8-w8a8,auto-bf16-activations,auto --tsv "$OUT/expert_bench.tsv"
  bench_rows expert_bench
  # The batched path's row buckets under uniform and skewed routing (prefill sizes).
  for skew in 0 1; do
    step expert_bench_buckets_skew$skew 90 "$B/gpu_expert_bench" --no-blend --tokens 256,4096 --routing-skew $skew \
      --variants cublas-batched-one-bucket,cublas-batched,auto --tsv "$OUT/expert_bench_buckets_skew$skew.tsv"
    bench_rows expert_bench_buckets_skew$skew
  done
  log "done (followup) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == validate ]]; then  # most wanted first (device calls are often cut short): expert tests, decode, profiles, prefill, model tests
  step cuda_experts_test 150 "$B/cuda_experts_test" --gtest_color=no
  step expert_bench_decode 120 "$B/gpu_expert_bench" --no-blend --tokens 1,2,4 --variants \
    few-tokens,few-tokens-one-warp-per-row,auto \
    --tsv "$OUT/expert_bench_decode.tsv"
  bench_rows expert_bench_decode
  # Rows split across two warps meet in shared memory behind named barriers: racecheck them.
  [[ -n $SANITIZER ]] && step racecheck_split_rows 90 "$SANITIZER" --tool racecheck --error-exitcode 9 \
    "$B/cuda_experts_test" --gtest_filter=*FewTokenRowsOnOneOrTwo*
  # Where the few-token FP8 kernels' time goes at 1 token (issue, pipes, stalls), rows split or not.
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
  for variant in few-tokens few-tokens-one-warp-per-row; do
    step "ncu_$variant" 90 "$NCU" --clock-control none --section SpeedOfLight --section ComputeWorkloadAnalysis \
      --section InstructionStats --section WarpStateStats --section Occupancy --kernel-name regex:FewToken \
      --launch-skip 20 --launch-count 2 "$B/gpu_expert_bench" --fp8-only --no-blend --tokens 1 --variants "$variant"
    cp "$LOGS/ncu_$variant.log" "$OUT/ncu_fp8_1token_$variant.txt"
  done
  step expert_bench 150 "$B/gpu_expert_bench" --no-blend --tokens 16,256,4096,16384 --variants \
    cublas-batched-one-bucket,cublas-batched,cublas-fp8-w8a8,auto-bf16-activations,auto --tsv "$OUT/expert_bench.tsv"
  bench_rows expert_bench
  step expert_bench_skew1 90 "$B/gpu_expert_bench" --no-blend --tokens 256,4096 --routing-skew 1 \
    --variants cublas-batched-one-bucket,cublas-batched,auto --tsv "$OUT/expert_bench_skew1.tsv"
  bench_rows expert_bench_skew1
  for t in gpu_model_test gpu_micro_batch_test cuda_fp8_products_test gpu_fixture_test; do
    step "$t" 150 "$B/$t" --gtest_color=no
  done
  step gpu_services_test 200 "$B/gpu_services_test" --gtest_color=no
  log "done (validate) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == confirm ]]; then  # after a measured change, for a call of ~2 minutes: its tests and speeds
  step cuda_experts_test 120 "$B/cuda_experts_test" --gtest_color=no --gtest_filter=*FewToken*:*Batched*
  step expert_bench_decode 60 "$B/gpu_expert_bench" --no-blend --tokens 1,2,4 --variants \
    few-tokens,few-tokens-one-warp-per-row,auto --tsv "$OUT/expert_bench_decode.tsv"
  bench_rows expert_bench_decode
  step expert_bench_buckets 60 "$B/gpu_expert_bench" --no-blend --tokens 16,256,4096,16384 \
    --variants cublas-batched-one-bucket,cublas-batched --tsv "$OUT/expert_bench_buckets.tsv"
  bench_rows expert_bench_buckets
  step expert_bench_skew1 60 "$B/gpu_expert_bench" --no-blend --tokens 256,4096 --routing-skew 1 \
    --variants cublas-batched-one-bucket,cublas-batched --tsv "$OUT/expert_bench_skew1.tsv"
  bench_rows expert_bench_skew1
  for t in gpu_model_test gpu_micro_batch_test; do step "$t" 60 "$B/$t" --gtest_color=no; done
  log "done (confirm) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == patterns ]]; then  # the decode read pattern's own speed beside the few-token decode (~1 minute)
  step read_patterns 90 "$B/gpu_expert_bench" --read-patterns --no-blend --tokens 1,2,4 \
    --variants few-tokens --tsv "$OUT/read_patterns.tsv"
  grep -E "^(pattern|experts)" "$LOGS/read_patterns.log" | cut -f2-5 | tee -a "$SUMMARY" >/dev/null
  log "done (patterns) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == sizes ]]; then  # reads and copies by size, prefill's cuBLAS product forms (~1 minute)
  step read_sizes 90 "$B/gpu_expert_bench" --read-patterns --no-blend --fp8-only --tokens 1 --variants few-tokens \
    --tsv "$OUT/read_sizes.tsv"
  grep -E "^(pattern|size|experts)" "$LOGS/read_sizes.log" | cut -f2-5 | tee -a "$SUMMARY" >/dev/null
  step gemm_forms 90 "$B/gpu_expert_bench" --gemm-forms --quick --no-blend --tokens 0 --tsv "$OUT/gemm_forms.tsv"
  grep -E "^gemm form" "$LOGS/gemm_forms.log" | cut -f2-5 | tee -a "$SUMMARY" >/dev/null
  log "done (sizes) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == prefill ]]; then  # the batched path's tests, prefill speeds, FP8 batches, every kernel of one call (~2 minutes)
  step cuda_experts_test 120 "$B/cuda_experts_test" --gtest_color=no
  step cuda_fp8_products_test 60 "$B/cuda_fp8_products_test" --gtest_color=no
  step gpu_model_test 120 "$B/gpu_model_test" --gtest_color=no
  step expert_bench_prefill 150 "$B/gpu_expert_bench" --no-blend --tokens 256,4096,16384 \
    --variants cublas-batched-one-bucket,auto,auto-bucket-11.5us --tsv "$OUT/expert_bench_prefill.tsv"
  bench_rows expert_bench_prefill
  # With a baseline bundle (.gpu-bundle-base): its V2-Lite prefill beside this build's, alternating.
  if [[ -f .gpu-bundle-base/bundle.tar.xz ]]; then
    BASE=/tmp/gpu-base
    rm -rf "$BASE" && mkdir -p "$BASE" && tar -C "$BASE" -xJf .gpu-bundle-base/bundle.tar.xz
    for round in 1 2; do
      step "base_prefill_$round" 60 env LD_LIBRARY_PATH="$BASE/lib:/usr/local/cuda/lib64" "$BASE/bin/gpu_expert_bench" \
        --quick --no-blend --tokens 256,4096,16384 --variants auto
      log "baseline, round $round:"; bench_rows "base_prefill_$round"
      step "new_prefill_$round" 60 "$B/gpu_expert_bench" --quick --no-blend --tokens 256,4096,16384 --variants auto
      log "this build, round $round:"; bench_rows "new_prefill_$round"
    done
  fi
  # FP8 batches of 8-256 tokens: the tensor-core kernels beside W8A8 (auto takes W8A8 from 256).
  step expert_bench_fp8_batches 90 "$B/gpu_expert_bench" --fp8-only --no-blend --tokens 8,16,64,128,256 \
    --variants direct-mma,cublas-fp8-w8a8,auto --tsv "$OUT/expert_bench_fp8_batches.tsv"
  bench_rows expert_bench_fp8_batches
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
  METRICS=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size
  step ncu_prefill_v2lite 120 "$NCU" --clock-control none --csv --metrics "$METRICS" --profile-from-start off \
    "$B/gpu_expert_bench" --quick --no-blend --tokens 4096 --variants auto --profile-one
  cp "$LOGS/ncu_prefill_v2lite.log" "$OUT/ncu_prefill_v2lite.csv"
  step memcheck_batched 150 "$SANITIZER" --tool memcheck --error-exitcode 1 "$B/cuda_experts_test" --gtest_color=no \
    --gtest_filter=*ManySlots*:*ErrorsAre*:*Batched*:*Float32*
  log "done (prefill) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == stalls ]]; then  # where the few-token kernels stall, by source line (ncu sampling; ~1 minute)
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
  for shape in fp8-only v3-only; do
    step "ncu_stalls_$shape" 150 "$NCU" --clock-control none --section SpeedOfLight --section LaunchStats \
      --section SchedulerStats --section WarpStateStats --section MemoryWorkloadAnalysis --section SourceCounters \
      --kernel-name regex:FewToken --launch-skip 20 --launch-count 2 "$B/gpu_expert_bench" --$shape --no-blend \
      --tokens 1 --variants few-tokens
    cp "$LOGS/ncu_stalls_$shape.log" "$OUT/ncu_stalls_1token_$shape.txt"
  done
  # The decode read pattern's own speed beside the FP8 decode it models.
  step read_patterns 60 "$B/gpu_expert_bench" --read-patterns --no-blend --fp8-only --tokens 1 --variants few-tokens \
    --tsv "$OUT/read_patterns.tsv"
  grep -E "^(pattern|experts)" "$LOGS/read_patterns.log" | cut -f2-5 | tee -a "$SUMMARY" >/dev/null
  log "done (stalls) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == buckets ]]; then  # the batched path's row buckets only, for a call of ~2 minutes
  step cuda_experts_test 90 "$B/cuda_experts_test" --gtest_color=no --gtest_filter=*Batched*:*Bf16Every*
  step expert_bench_skew1 60 "$B/gpu_expert_bench" --no-blend --tokens 4096 --routing-skew 1 \
    --variants cublas-batched-one-bucket,cublas-batched --tsv "$OUT/expert_bench_skew1.tsv"
  bench_rows expert_bench_skew1
  log "done (buckets) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == tiny ]]; then  # the new expert paths' tests and speeds only, for a call of ~2 minutes
  step cuda_fp8_products_test 30 "$B/cuda_fp8_products_test" --gtest_color=no
  grep -E "^W8A8" "$LOGS/cuda_fp8_products_test.log" | tee -a "$SUMMARY" >/dev/null
  step cuda_experts_test 45 "$B/cuda_experts_test" --gtest_color=no --gtest_filter=*FewToken*
  step expert_bench 60 "$B/gpu_expert_bench" --no-blend --tokens 1,4,4096 --variants \
    direct-mma,few-tokens,cublas-fp8-w8a8,auto-bf16-activations --tsv "$OUT/expert_bench.tsv"
  bench_rows expert_bench
  log "done (tiny) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == short ]]; then  # the same checks as "experts", trimmed for a call of ~4 minutes
  step cuda_fp8_products_test 60 "$B/cuda_fp8_products_test" --gtest_color=no
  grep -E "^W8A8" "$LOGS/cuda_fp8_products_test.log" | tee -a "$SUMMARY" >/dev/null
  step cuda_experts_test 90 "$B/cuda_experts_test" --gtest_color=no --gtest_filter=*FewToken*:*DeviceBatch*:*Fp8Block*
  step gpu_model_test 60 "$B/gpu_model_test" --gtest_color=no
  step gpu_micro_batch_test 45 "$B/gpu_micro_batch_test" --gtest_color=no
  step expert_bench 90 "$B/gpu_expert_bench" --no-blend --tokens 1,4,4096 --variants \
    direct-mma,few-tokens-stream-order,few-tokens,cublas-batched,cublas-fp8-w8a8,auto --tsv "$OUT/expert_bench.tsv"
  bench_rows expert_bench
  [[ -n $SANITIZER ]] && step memcheck_few_tokens 40 "$SANITIZER" --tool memcheck --error-exitcode 9 \
    "$B/cuda_experts_test" --gtest_filter=*FewTokenDevice*
  log "done (short) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == experts ]]; then
  step cuda_fp8_products_test 90 "$B/cuda_fp8_products_test" --gtest_color=no
  grep -E "^W8A8" "$LOGS/cuda_fp8_products_test.log" | tee -a "$SUMMARY" >/dev/null
  step cuda_experts_test 150 "$B/cuda_experts_test" --gtest_color=no
  step gpu_model_test 90 "$B/gpu_model_test" --gtest_color=no
  step gpu_micro_batch_test 60 "$B/gpu_micro_batch_test" --gtest_color=no
  step expert_bench 150 "$B/gpu_expert_bench" --no-blend --tokens 1,2,4,16,4096 --variants \
    direct-mma,few-tokens-stream-order,few-tokens,cublas-batched,cublas-fp8-w8a8,auto-bf16-activations,auto \
    --tsv "$OUT/expert_bench.tsv"
  bench_rows expert_bench
  if [[ -n $SANITIZER ]]; then
    step memcheck_few_tokens 60 "$SANITIZER" --tool memcheck --error-exitcode 9 "$B/cuda_experts_test" \
      --gtest_filter=*FewTokenDevice*:*FewTokenPath*:*DeviceBatch*
    step memcheck_fp8_products 60 "$SANITIZER" --tool memcheck --error-exitcode 9 "$B/cuda_fp8_products_test" \
      --gtest_filter=*Known*:*Refuses*
    step racecheck_few_tokens 60 "$SANITIZER" --tool racecheck --error-exitcode 9 "$B/cuda_experts_test" \
      --gtest_filter=*FewTokenDevice*
  fi
  log "done (experts) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == iterate ]]; then
  # A development round: the GPU tests of the kernels and the model, the expert benchmark (every
  # path), the end-to-end benchmark, and ncu's warp-stall and memory sections of the tensor-core
  # gate/up kernel at 1 token (V3 shape, bf16).
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
  for t in cuda_ops_test cuda_experts_test gpu_model_test gpu_fixture_test; do step "$t" 150 "$B/$t" --gtest_color=no; done
  step expert_bench 240 "$B/gpu_expert_bench" --no-blend --tsv "$OUT/expert_bench.tsv"
  grep -E "^experts" "$LOGS/expert_bench.log" | grep -E "direct-mma|batched|auto" | cut -f2-6 | tee -a "$SUMMARY" >/dev/null
  step hf_baseline 200 python3 bench/gpu/hf_baseline.py --out /tmp/v2lite-4layers
  step model_bench 150 "$B/gpu_model_bench" /tmp/v2lite-4layers
  sed -n '/== end-to-end summary/,$p' "$LOGS/model_bench.log" | tee -a "$SUMMARY" >/dev/null
  step ncu_gate_up 120 "$NCU" --clock-control none --section WarpStateStats --section MemoryWorkloadAnalysis \
    --section LaunchStats --section Occupancy --kernel-name regex:ExpertGateUpKernel --launch-skip 4 --launch-count 1 \
    "$B/gpu_expert_bench" --v3-only --no-blend --tokens 1 --variants direct-mma
  cp "$LOGS/ncu_gate_up.log" "$OUT/ncu_gate_up.txt"
  log "done (iterate) in $(( $(date +%s) - START ))s"
  exit 0
fi

if [[ $mode == profile ]]; then
  # The expert tests, the expert benchmark (every path), then per-kernel times and DRAM traffic
  # (ncu, clocks left alone) of the expert pipeline at 1 and 16 tokens (V3 shape, bf16 and FP8,
  # tensor-core path) and of one batch-1 decode step of the end-to-end model.
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
  METRICS=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,sm__warps_active.avg.pct_of_peak_sustained_active
  step cuda_experts_test 150 "$B/cuda_experts_test" --gtest_color=no
  step expert_bench 240 "$B/gpu_expert_bench" --no-blend --tsv "$OUT/expert_bench.tsv"
  grep -E "^experts" "$LOGS/expert_bench.log" | grep -E "tokens (1|4|16|64|128|256|4096|16384) " | cut -f2-6 \
    | tee -a "$SUMMARY" >/dev/null
  for tokens in 1 16; do
    step "ncu_experts_$tokens" 120 "$NCU" --clock-control none --csv --metrics "$METRICS" \
      --kernel-name regex:"Expert|Permutation|Gather|Combine" --launch-skip 10 --launch-count 20 \
      "$B/gpu_expert_bench" --v3-only --no-blend --tokens "$tokens" --variants direct-mma
    cp "$LOGS/ncu_experts_$tokens.log" "$OUT/ncu_experts_$tokens.csv"
  done
  step hf_baseline 200 python3 bench/gpu/hf_baseline.py --out /tmp/v2lite-4layers
  step ncu_decode 200 "$NCU" --profile-from-start off --clock-control none --csv --metrics "$METRICS" \
    "$B/gpu_model_bench" /tmp/v2lite-4layers --profile
  cp "$LOGS/ncu_decode.log" "$OUT/ncu_decode.csv"
  log "done (profile) in $(( $(date +%s) - START ))s"
  exit 0
fi

for t in cuda_ops_test cuda_blend_test cuda_experts_test cuda_fp8_products_test gpu_model_test gpu_micro_batch_test \
    gpu_fixture_test gpu_device_flag_test; do
  step "$t" 120 "$B/$t" --gtest_color=no
done
step gpu_services_test 200 "$B/gpu_services_test" --gtest_color=no

if [[ $mode == check ]]; then
  step expert_bench_quick 60 "$B/gpu_expert_bench" --quick --tsv "$OUT/expert_bench_quick.tsv"
  grep -E "^experts" "$LOGS/expert_bench_quick.log" | grep -E "tokens (1|4|16|64) " | cut -f2-5 | tee -a "$SUMMARY" >/dev/null
  step hf_baseline 200 python3 bench/gpu/hf_baseline.py --out /tmp/v2lite-4layers
  grep -E "^HF" "$LOGS/hf_baseline.log" | tee -a "$SUMMARY" >/dev/null
  step model_bench 150 "$B/gpu_model_bench" /tmp/v2lite-4layers
  sed -n '/== end-to-end summary/,$p' "$LOGS/model_bench.log" | tee -a "$SUMMARY" >/dev/null
  if [[ -n $SANITIZER ]]; then
    step memcheck_ops 90 "$SANITIZER" --tool memcheck --error-exitcode 9 "$B/cuda_ops_test" --gtest_filter=*Decode*
    step memcheck_experts 90 "$SANITIZER" --tool memcheck --error-exitcode 9 "$B/cuda_experts_test" \
      --gtest_filter=*Compact*:*Errors*:*DeviceBatch*
  fi
  log "done (check) in $(( $(date +%s) - START ))s"
  exit 0
fi

step expert_bench 150 "$B/gpu_expert_bench" --tsv "$OUT/expert_bench.tsv"
grep -E "ceiling|blend|experts" "$LOGS/expert_bench.log" | tee -a "$SUMMARY" >/dev/null
step hf_baseline 200 python3 bench/gpu/hf_baseline.py --out /tmp/v2lite-4layers
grep -E "^HF" "$LOGS/hf_baseline.log" | tee -a "$SUMMARY" >/dev/null
step model_bench 150 "$B/gpu_model_bench" /tmp/v2lite-4layers
sed -n '/== end-to-end summary/,$p' "$LOGS/model_bench.log" | tee -a "$SUMMARY" >/dev/null
grep -E "^loaded" "$LOGS/model_bench.log" | tail -1 | tee -a "$SUMMARY" >/dev/null
# Services: the GPU throughput first (it writes the random V2-Lite-width checkpoint that the CPU
# services benchmark reuses), then the CPU services benchmark alone on the machine's cores.
step gpu_services_bench 150 "$B/gpu_services_bench" --bin-dir="$BUNDLE" --work-dir=/tmp/services-bench \
  --markdown="$OUT/gpu_services_bench.md"
cat "$OUT/gpu_services_bench.md" 2>/dev/null | tee -a "$SUMMARY" >/dev/null
if [[ -z ${SKIP_CPU_SERVICES:-} ]]; then  # SKIP_CPU_SERVICES=1: the CPU-only services benchmark is left out
  step services_bench_cpu ${SERVICES_BENCH_TIMEOUT:-170} "$B/fanout_bench" --bin-dir="$BUNDLE" \
    --work-dir=/tmp/services-bench --markdown="$OUT/services_bench.md" ${SERVICES_BENCH_ARGS:-}
  cat "$OUT/services_bench.md" 2>/dev/null | tee -a "$SUMMARY" >/dev/null
fi
if [[ -n $SANITIZER ]]; then
  step memcheck_experts 100 "$SANITIZER" --tool memcheck --error-exitcode 9 "$B/cuda_experts_test" \
    --gtest_filter=*Fp8Block*:*Fp8Bytes*:*Errors*:*DeviceBatch*
  step memcheck_experts_bf16 100 "$SANITIZER" --tool memcheck --error-exitcode 9 "$B/cuda_experts_test" \
    --gtest_filter=*Bf16EveryPath*
  step memcheck_model 60 "$SANITIZER" --tool memcheck --error-exitcode 9 "$B/gpu_model_test"
  step memcheck_ops 60 "$SANITIZER" --tool memcheck --error-exitcode 9 "$B/cuda_ops_test"
  step racecheck_ops 90 "$SANITIZER" --tool racecheck --error-exitcode 9 "$B/cuda_ops_test" --gtest_filter=*Decode*
  step racecheck_experts 90 "$SANITIZER" --tool racecheck --error-exitcode 9 "$B/cuda_experts_test" \
    --gtest_filter=*Fp8Block*:*DeviceBatch*
fi
log "done in $(( $(date +%s) - START ))s"
