#!/usr/bin/env bash
# bench/gpu/make_bundle.sh: builds the GPU tests and benchmarks here (no GPU needed) and packs them
# with the Debian .so files they need into .gpu-bundle (git-ignored via .git/info/exclude), the
# folder run_on_device.sh runs from. OpenBLAS (35 MB) is swapped for Debian's reference BLAS
# (0.4 MB, same cblas_sgemm): only the CPU reference of the tests uses it, on tiny shapes.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-cuda}
targets="cuda_ops_test cuda_blend_test cuda_experts_test gpu_model_test gpu_fixture_test gpu_expert_bench gpu_model_bench"
cmake --build "$BUILD" -j2 --target $targets
rm -rf .gpu-bundle
binaries=()
for t in $targets; do
  if [[ -x $BUILD/tests/$t ]]; then binaries+=("$BUILD/tests/$t"); else binaries+=("$BUILD/bin/$t"); fi
done
../shared/tools/device-bundle .gpu-bundle "${binaries[@]}" >/dev/null
strip --strip-debug .gpu-bundle/bin/*
rm -f .gpu-bundle/lib/libopenblas.so.0 .gpu-bundle/lib/libgfortran.so.5 .gpu-bundle/lib/libquadmath.so.0
cp -L /usr/lib/x86_64-linux-gnu/blas/libblas.so.3 .gpu-bundle/lib/libopenblas.so.0
du -sh .gpu-bundle
