// Assembly-of-Experts blend kernels (difference norms, blend-or-keep-base), the streaming copy
// used as the bandwidth ceiling, and counter-based random fills. Declared in blend_kernels.h.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/ops/cuda/blend_kernels.h"
#include "engine/ops/cuda/cuda_status.h"

namespace expertmesh::cuda {
namespace {

constexpr int kThreads = 256;

struct Bf16x8 {
  float v[8];
};

__device__ __forceinline__ Bf16x8 Unpack(uint4 packed) {
  Bf16x8 out;
  const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out.v[2 * i] = __uint_as_float(words[i] << 16);
    out.v[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
  return out;
}

__device__ __forceinline__ uint32_t PackPair(float lo, float hi) {
  __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&pair);
}

unsigned StreamingGrid(int64_t vectors) {
  int device = 0, sms = 132;
  if (cudaGetDevice(&device) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t wanted = (vectors + kThreads - 1) / kThreads;
  const int64_t cap = int64_t(sms) * 8;  // persistent-ish grid: 8 blocks of 256 per SM
  return static_cast<unsigned>(wanted < 1 ? 1 : (wanted < cap ? wanted : cap));
}

template <int kParents>
__global__ void __launch_bounds__(kThreads) DifferenceNormsKernel(BlendParents parents, int64_t vectors, double* sums) {
  float local[kParents] = {};
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < vectors; v += int64_t(gridDim.x) * blockDim.x) {
    const Bf16x8 base = Unpack(__ldcs(reinterpret_cast<const uint4*>(parents.tensors[0]) + v));
#pragma unroll
    for (int e = 0; e < 8; ++e) local[0] += base.v[e] * base.v[e];
#pragma unroll
    for (int p = 1; p < kParents; ++p) {
      const Bf16x8 other = Unpack(__ldcs(reinterpret_cast<const uint4*>(parents.tensors[p]) + v));
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float d = other.v[e] - base.v[e];
        local[p] += d * d;
      }
    }
  }
  __shared__ float partial[kThreads / 32][kParents];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int p = 0; p < kParents; ++p) {
    float value = local[p];
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
    if (lane == 0) partial[warp][p] = value;
  }
  __syncthreads();
  if (threadIdx.x < kParents) {
    double total = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) total += partial[w][threadIdx.x];
    atomicAdd(sums + threadIdx.x, total);
  }
}

__device__ __forceinline__ bool KeepBase(const double* sums, int parents, float delta) {
  if (sums == nullptr) return false;
  // engine/merge's rule: d_p = ||P_p - P_0|| / ||P_0|| (0 for identical tensors, +inf for a zero
  // base with a non-zero difference); keep the base when every d_p < delta.
  const double limit = double(delta) * double(delta) * sums[0];
  for (int p = 1; p < parents; ++p) {
    const bool close = sums[p] == 0.0 ? delta > 0.0f : sums[p] < limit;
    if (!close) return false;
  }
  return true;
}

template <int kParents>
__global__ void __launch_bounds__(kThreads)
BlendKernel(BlendParents parents, int64_t vectors, const double* sums, float delta, uint4* out, int32_t* kept_base) {
  const bool keep = KeepBase(sums, kParents, delta);
  if (kept_base != nullptr && blockIdx.x == 0 && threadIdx.x == 0) *kept_base = keep ? 1 : 0;
  const uint4* base = reinterpret_cast<const uint4*>(parents.tensors[0]);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  if (keep) {
    for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < vectors; v += stride) {
      __stcs(out + v, __ldcs(base + v));
    }
    return;
  }
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < vectors; v += stride) {
    uint4 loaded[kParents];
#pragma unroll
    for (int p = 0; p < kParents; ++p) loaded[p] = __ldcs(reinterpret_cast<const uint4*>(parents.tensors[p]) + v);
    float sum[8] = {};
#pragma unroll
    for (int p = 0; p < kParents; ++p) {
      const Bf16x8 values = Unpack(loaded[p]);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum[e] += parents.lambdas[p] * values.v[e];
    }
    __stcs(out + v, make_uint4(PackPair(sum[0], sum[1]), PackPair(sum[2], sum[3]), PackPair(sum[4], sum[5]),
                               PackPair(sum[6], sum[7])));
  }
}

__global__ void __launch_bounds__(kThreads) StreamCopyKernel(const uint4* __restrict__ in, uint4* __restrict__ out,
                                                             int64_t vectors) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (; v + 3 * stride < vectors; v += 4 * stride) {
    const uint4 a = __ldcs(in + v), b = __ldcs(in + v + stride), c = __ldcs(in + v + 2 * stride),
                d = __ldcs(in + v + 3 * stride);
    __stcs(out + v, a);
    __stcs(out + v + stride, b);
    __stcs(out + v + 2 * stride, c);
    __stcs(out + v + 3 * stride, d);
  }
  for (; v < vectors; v += stride) __stcs(out + v, __ldcs(in + v));
}

__device__ __forceinline__ float UniformFromIndex(uint64_t seed, int64_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(index) + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;  // [-1, 1)
}

__global__ void FillBf16Kernel(__nv_bfloat16* out, int64_t count, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(scale * UniformFromIndex(seed, i));
  }
}

__global__ void FillF32Kernel(float* out, int64_t count, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = scale * UniformFromIndex(seed, i);
  }
}

__global__ void FillFp8Kernel(uint8_t* out, int64_t count, uint64_t seed, float fraction) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = __nv_cvt_float_to_fp8(448.0f * fraction * UniformFromIndex(seed, i), __NV_SATFINITE, __NV_E4M3);
  }
}

absl::Status CheckParents(const BlendParents& parents, int64_t elements) {
  if (parents.count < 1 || parents.count > kMaxBlendParents) {
    return absl::InvalidArgumentError("blend: between 1 and 8 parents");
  }
  if (elements % 8 != 0) return absl::InvalidArgumentError("blend: element count must be a multiple of 8");
  return absl::OkStatus();
}

template <template <int> class Launch, typename... Args>
void DispatchParents(int count, Args&&... args) {
  switch (count) {
    case 1: Launch<1>::Run(args...); break;
    case 2: Launch<2>::Run(args...); break;
    case 3: Launch<3>::Run(args...); break;
    case 4: Launch<4>::Run(args...); break;
    case 5: Launch<5>::Run(args...); break;
    case 6: Launch<6>::Run(args...); break;
    case 7: Launch<7>::Run(args...); break;
    default: Launch<8>::Run(args...); break;
  }

}

template <int kParents>
struct NormsLaunch {
  static void Run(const BlendParents& parents, int64_t vectors, double* sums, cudaStream_t stream) {
    DifferenceNormsKernel<kParents><<<StreamingGrid(vectors), kThreads, 0, stream>>>(parents, vectors, sums);
  }
};

template <int kParents>
struct BlendLaunch {
  static void Run(const BlendParents& parents, int64_t vectors, const double* sums, float delta, uint4* out,
                  int32_t* kept_base, cudaStream_t stream) {
    BlendKernel<kParents><<<StreamingGrid(vectors), kThreads, 0, stream>>>(parents, vectors, sums, delta, out,
                                                                           kept_base);
  }
};

unsigned FillGrid(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 4 ? 65535 * 4 : blocks));
}

}  // namespace

absl::Status LaunchBlendDifferenceNorms(const BlendParents& parents, int64_t elements, double* sums, void* stream) {
  if (absl::Status status = CheckParents(parents, elements); !status.ok()) return status;
  if (elements == 0) return absl::OkStatus();
  DispatchParents<NormsLaunch>(parents.count, parents, elements / 8, sums, static_cast<cudaStream_t>(stream));
  return LastLaunchStatus("DifferenceNormsKernel");
}

absl::Status LaunchBlend(const BlendParents& parents, int64_t elements, const double* sums, float delta,
                         uint16_t* out, int32_t* kept_base, void* stream) {
  if (absl::Status status = CheckParents(parents, elements); !status.ok()) return status;
  if (elements == 0) return absl::OkStatus();
  DispatchParents<BlendLaunch>(parents.count, parents, elements / 8, sums, delta, reinterpret_cast<uint4*>(out),
                               kept_base, static_cast<cudaStream_t>(stream));
  return LastLaunchStatus("BlendKernel");
}

absl::Status LaunchStreamCopy(const void* in, void* out, int64_t bytes, void* stream) {
  if (bytes % 16 != 0) return absl::InvalidArgumentError("LaunchStreamCopy: bytes must be a multiple of 16");
  if (bytes == 0) return absl::OkStatus();
  const int64_t vectors = bytes / 16;
  StreamCopyKernel<<<StreamingGrid(vectors), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint4*>(in), static_cast<uint4*>(out), vectors);
  return LastLaunchStatus("StreamCopyKernel");
}

absl::Status LaunchFillUniformBf16(uint16_t* out, int64_t count, uint64_t seed, float scale, void* stream) {
  if (count <= 0) return absl::OkStatus();
  FillBf16Kernel<<<FillGrid(count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<__nv_bfloat16*>(out), count, seed, scale);
  return LastLaunchStatus("FillBf16Kernel");
}

absl::Status LaunchFillUniformF32(float* out, int64_t count, uint64_t seed, float scale, void* stream) {
  if (count <= 0) return absl::OkStatus();
  FillF32Kernel<<<FillGrid(count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(out, count, seed, scale);
  return LastLaunchStatus("FillF32Kernel");
}

absl::Status LaunchFillUniformFp8(uint8_t* out, int64_t count, uint64_t seed, float fraction, void* stream) {
  if (count <= 0) return absl::OkStatus();
  FillFp8Kernel<<<FillGrid(count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(out, count, seed, fraction);
  return LastLaunchStatus("FillFp8Kernel");
}

}  // namespace expertmesh::cuda
