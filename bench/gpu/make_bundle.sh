#!/usr/bin/env bash
# bench/gpu/make_bundle.sh: builds (here, no GPU needed) everything the GPU device call runs — the
# GPU tests, the GPU benchmarks, the services (expert-svc, attention-svc, router-svc) with their
# GPU test and benchmark, and the CPU services benchmark (fanout_bench) — and packs them with the
# Debian .so files they need (OpenBLAS included: the CPU services benchmark measures it) into
# .gpu-bundle/bundle.tar.xz (git-ignored via .git/info/exclude), which run_on_device.sh unpacks.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-cuda2}
targets="cuda_ops_test cuda_blend_test cuda_experts_test cuda_fp8_products_test gpu_model_test gpu_micro_batch_test
         gpu_fixture_test gpu_services_test
         gpu_device_flag_test gpu_expert_bench gpu_model_bench gpu_services_bench fanout_bench expert-svc
         attention-svc router-svc"
cmake --build "$BUILD" -j2 --target $targets
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
binaries=()
for t in $targets; do
  if [[ -x $BUILD/tests/$t ]]; then binaries+=("$BUILD/tests/$t"); else binaries+=("$BUILD/bin/$t"); fi
done
../shared/tools/device-bundle "$staging" "${binaries[@]}" >/dev/null
strip --strip-debug "$staging"/bin/*
rm -rf .gpu-bundle && mkdir -p .gpu-bundle
tar -C "$staging" -cf - bin lib | xz -6 -T2 > .gpu-bundle/bundle.tar.xz
du -sh .gpu-bundle/bundle.tar.xz
