// Launchers for the Assembly-of-Experts blend of one bf16 tensor on the device:
// out = bf16(sum_i lambda_i * P_i) computed in float32, unless the parents are so close that the
// base parent P_0 is kept as is (delta test: max_i ||P_i - P_0||_F / ||P_0||_F < delta, the rule of
// engine/merge's TensorMerger, which is the CPU reference; put the base parent first). Both
// passes are memory-bound streaming kernels (16-byte loads); the decision is taken on the device,
// so a blend of many tensors needs no host synchronisation.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace expertmesh::cuda {

inline constexpr int kMaxBlendParents = 8;

struct BlendParents {
  const uint16_t* tensors[kMaxBlendParents] = {};  // bf16, `count` elements each; [0] is the base
  float lambdas[kMaxBlendParents] = {};
  int count = 0;
};

// sums[0] += ||P_0||^2 and sums[i] += ||P_i - P_0||^2 (float64 accumulators, zeroed by the
// caller) over `elements` values; elements % 8 == 0.
absl::Status LaunchBlendDifferenceNorms(const BlendParents& parents, int64_t elements, double* sums, void* stream);

// out = base when sums (from LaunchBlendDifferenceNorms) pass the delta test, else the float32
// weighted sum rounded to bf16. With sums == nullptr the blend is unconditional. Writes
// *kept_base (device int32, may be null) = 1 or 0. elements % 8 == 0.
absl::Status LaunchBlend(const BlendParents& parents, int64_t elements, const double* sums, float delta,
                         uint16_t* out, int32_t* kept_base, void* stream);

// Device-to-device copy through a streaming kernel (the bandwidth ceiling the blend is measured
// against, counted as bytes read + bytes written); bytes % 16 == 0.
absl::Status LaunchStreamCopy(const void* in, void* out, int64_t bytes, void* stream);

// Deterministic pseudo-random fills on the device (counter-based hash, so a (seed, index) pair
// always gives the same value): uniform in [-scale, scale).
absl::Status LaunchFillUniformBf16(uint16_t* out, int64_t count, uint64_t seed, float scale, void* stream);
absl::Status LaunchFillUniformF32(float* out, int64_t count, uint64_t seed, float scale, void* stream);
// E4M3 bytes of uniform values in [-448 * fraction, 448 * fraction) (never NaN).
absl::Status LaunchFillUniformFp8(uint8_t* out, int64_t count, uint64_t seed, float fraction, void* stream);

}  // namespace expertmesh::cuda
