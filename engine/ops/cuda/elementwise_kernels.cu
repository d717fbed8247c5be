// Row-wise and element-wise kernels: RMSNorm (one block per row, warp-shuffle reduction),
// SwiGLU's silu(gate)*up, and bf16 widening. Launchers are declared in cuda_kernels.h.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "engine/ops/cuda/cuda_kernels.h"

namespace expertmesh::cuda {
namespace {

constexpr int kThreadsPerBlock = 256;

__global__ void RmsNormKernel(const float* __restrict__ x, const float* __restrict__ weight,
                              float* __restrict__ out, int64_t cols, float eps) {
  const float* row_in = x + blockIdx.x * cols;
  float* row_out = out + blockIdx.x * cols;
  float sum_of_squares = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum_of_squares += row_in[c] * row_in[c];
  for (int offset = 16; offset > 0; offset /= 2) {
    sum_of_squares += __shfl_xor_sync(0xffffffff, sum_of_squares, offset);
  }
  __shared__ float warp_sums[kThreadsPerBlock / 32];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = sum_of_squares;
  __syncthreads();
  if (warp == 0) {
    float total = lane < blockDim.x / 32 ? warp_sums[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) total += __shfl_xor_sync(0xffffffff, total, offset);
    if (lane == 0) warp_sums[0] = total;
  }
  __syncthreads();
  const float scale = rsqrtf(warp_sums[0] / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) row_out[c] = row_in[c] * scale * weight[c];
}

__global__ void SiluMultiplyKernel(const float* __restrict__ gate, const float* __restrict__ up,
                                   float* __restrict__ out, int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + __expf(-g)) * up[i];
  }
}

__global__ void BFloat16ToFloatKernel(const uint16_t* __restrict__ bits, float* __restrict__ out,
                                      int64_t count) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = __uint_as_float(static_cast<uint32_t>(bits[i]) << 16);
  }
}

absl::Status LaunchResult(const char* kernel) {
  const cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(std::string(kernel) + " launch failed: " + cudaGetErrorString(error));
}

unsigned GridFor(int64_t count) {
  const int64_t blocks = (count + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<unsigned>(blocks < 65535 * 16 ? (blocks > 0 ? blocks : 1) : 65535 * 16);
}

}  // namespace

absl::Status LaunchRmsNorm(const float* x, const float* weight, float* out, int64_t rows,
                           int64_t cols, float eps, void* stream) {
  if (rows <= 0 || cols <= 0) return absl::InvalidArgumentError("LaunchRmsNorm: empty tensor");
  RmsNormKernel<<<static_cast<unsigned>(rows), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      x, weight, out, cols, eps);
  return LaunchResult("RmsNormKernel");
}

absl::Status LaunchSiluMultiply(const float* gate, const float* up, float* out, int64_t count,
                                void* stream) {
  if (count <= 0) return absl::OkStatus();
  SiluMultiplyKernel<<<GridFor(count), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      gate, up, out, count);
  return LaunchResult("SiluMultiplyKernel");
}

absl::Status LaunchBFloat16ToFloat(const uint16_t* bits, float* out, int64_t count, void* stream) {
  if (count <= 0) return absl::OkStatus();
  BFloat16ToFloatKernel<<<GridFor(count), kThreadsPerBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      bits, out, count);
  return LaunchResult("BFloat16ToFloatKernel");
}

}  // namespace expertmesh::cuda
