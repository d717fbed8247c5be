// gpu_expert_bench's memory and cuBLAS probes (memory_probes.h): what a read of the decode's bytes
// reaches by access pattern, by size and by mechanism (loads or bulk copies), and what cuBLAS
// reaches on prefill's expert shapes in the form the batched path uses and in two others.
#include "bench/gpu/memory_probes.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/gpu/gpu_timer.h"
#include "bench/gpu/read_pattern_kernels.h"
#include "engine/ops/cuda/blend_kernels.h"
#include "engine/ops/cuda/cublas_gemm.h"
#include "engine/ops/cuda/cuda_device.h"

namespace expertmesh::bench {
namespace {

using cuda::DeviceBuffer;

// Reads and copies from the decode's sizes (the down and gate/up bytes of two V3 FP8 experts, and
// both) up to 1 GiB: a flat stream of 16-byte loads, bulk copies into shared memory (1-3 blocks
// per multiprocessor), cudaMemcpy and the streaming copy kernel (copies count read + write bytes,
// as the ceiling does), each from 4 rotating copies; then the fixed cost per launch that a line
// through the flat read's times at the smallest and largest size implies.
void BenchReadSizes(const Ceilings& ceilings, int sm_count, cudaStream_t stream, Report& report) {
  const int64_t sizes[] = {14336 * 2048, 8192 * 7168, 14336 * 2048 + 8192 * 7168, int64_t(256) << 20,
                           int64_t(1) << 30};
  auto sink = DeviceBuffer::Allocate(int64_t(sm_count) * 32 * 4);
  CheckOrDie(sink.status(), "alloc");
  std::vector<std::pair<int64_t, double>> flat;
  for (const int64_t bytes : sizes) {
    auto copies = DeviceBuffer::Allocate(4 * bytes), target = DeviceBuffer::Allocate(bytes);
    CheckOrDie(copies.status(), "alloc");
    CheckOrDie(target.status(), "alloc");
    CheckOrDie(cuda::LaunchFillUniformF32(copies->as<float>(), 4 * bytes / int64_t(sizeof(float)), 6, 1.0f, stream),
               "fill");
    const auto source = [&](int i) { return copies->as<uint8_t>() + (i % 4) * bytes; };
    const auto add = [&](const std::string& what, double ms, double moved) {
      const double gbps = moved / (ms * 1e-3) / 1e9;
      report.Add(absl::StrFormat("size\t%.1f MB: %s\t%.4f ms\t%.0f GB/s = %.0f%% of copy", bytes / 1e6, what, ms,
                                 gbps, 100.0 * gbps / ceilings.copy_gbps));
    };
    const double flat_ms = MedianMilliseconds(stream, 3, 40, [&](int i) {
      return bench::LaunchReadPattern(source(i), bytes / 2048, 2048, false, sink->as<float>(), sm_count, stream);
    });
    flat.emplace_back(bytes, flat_ms);
    add("read, flat stream of 16-byte loads", flat_ms, bytes);
    for (int blocks : {1, 2, 3}) {
      add(absl::StrFormat("read, bulk copies, %d block(s) x 64 KB in flight per SM", blocks),
          MedianMilliseconds(stream, 3, 40, [&](int i) {
            return bench::LaunchBulkRead(source(i), bytes, blocks, sink->as<float>(), sm_count, stream);
          }),
          bytes);
    }
    add("copy, cudaMemcpy D2D (read + write bytes)", MedianMilliseconds(stream, 3, 40, [&](int i) {
          return cudaMemcpyAsync(target->data(), source(i), bytes, cudaMemcpyDeviceToDevice, stream) == cudaSuccess
                     ? absl::OkStatus() : absl::InternalError("memcpy");
        }), 2.0 * bytes);
    add("copy, streaming kernel (read + write bytes)", MedianMilliseconds(stream, 3, 40, [&](int i) {
          return cuda::LaunchStreamCopy(source(i), target->data(), bytes, stream);
        }), 2.0 * bytes);
  }
  const auto [small_bytes, small_ms] = flat.front();
  const auto [large_bytes, large_ms] = flat.back();
  const double us_per_byte = (large_ms - small_ms) * 1e3 / double(large_bytes - small_bytes);
  report.Add(absl::StrFormat("size\tflat read fit\tfixed %.2f us per launch + %.0f GB/s", small_ms * 1e3 -
                             us_per_byte * small_bytes, 1e-3 / us_per_byte));
}

}  // namespace

// The decode weight-read pattern's own cost: the bytes the few-token kernels read at 1 token (V3
// FP8, two local experts: 8192 gate/up rows of 7168 bytes, 14336 down rows of 2048) read with each
// warp streaming whole rows of its own, and as one flat stream, from 4 rotating copies (more than
// L2 holds).
void BenchReadPatterns(const Ceilings& ceilings, cudaStream_t stream, Report& report) {
  int device = 0, sm_count = 0;
  CheckCuda(cudaGetDevice(&device), "device");
  CheckCuda(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device), "multiprocessor count");
  struct Pattern {
    const char* name;
    int64_t rows, row_bytes;
  };
  for (const Pattern& pattern : {Pattern{"gate/up-like", 8192, 7168}, Pattern{"down-like", 14336, 2048}}) {
    const int64_t bytes = pattern.rows * pattern.row_bytes;
    auto copies = DeviceBuffer::Allocate(4 * bytes), sink = DeviceBuffer::Allocate(int64_t(sm_count) * 32 * 4);
    CheckOrDie(copies.status(), "alloc");
    CheckOrDie(sink.status(), "alloc");
    CheckOrDie(cuda::LaunchFillUniformF32(copies->as<float>(), 4 * bytes / int64_t(sizeof(float)), 5, 1.0f, stream), "fill");
    for (bool whole_rows : {true, false}) {
      const double ms = MedianMilliseconds(stream, 3, 40, [&](int i) {
        return bench::LaunchReadPattern(copies->as<uint8_t>() + (i % 4) * bytes, pattern.rows, pattern.row_bytes,
                                        whole_rows, sink->as<float>(), sm_count, stream);
      });
      const double gbps = bytes / (ms * 1e-3) / 1e9;
      report.Add(absl::StrFormat("pattern	%s: %lld rows of %lld B, %s	%.4f ms	%.0f GB/s = %.0f%% of copy",
                                 pattern.name, (long long)pattern.rows, (long long)pattern.row_bytes,
                                 whole_rows ? "a warp per row" : "flat stream", ms, gbps,
                                 100.0 * gbps / ceilings.copy_gbps));
    }
  }
  BenchReadSizes(ceilings, sm_count, stream, report);
}

// Prefill's expert products in three cuBLAS forms, side by side: the pointer-array batch the
// batched path runs (cublasGemmBatchedEx), a strided batch (experts' weights at one stride), and
// one dense GEMM of the same rows and flops against a single weight matrix (the ceiling for this
// M, N, K). Shapes: V2-Lite and V3 gate/up and down at the rows per expert of 4096 tokens.
void BenchGemmForms(const Ceilings& ceilings, cudaStream_t stream, Report& report) {
  struct Form {
    const char* name;
    int64_t experts, rows, n, k;
  };
  const Form forms[] = {{"V2-Lite gate/up", 64, 384, 2816, 2048}, {"V2-Lite down", 64, 384, 2048, 1408},
                        {"V3 gate/up", 32, 128, 4096, 7168},       {"V3 down", 32, 128, 7168, 2048}};
  auto blas_or = cuda::CublasContext::Create();
  CheckOrDie(blas_or.status(), "cublas");
  cuda::CublasContext& blas = **blas_or;
  for (const Form& f : forms) {
    auto a = DeviceBuffer::Allocate(f.experts * f.rows * f.k * 2), b = DeviceBuffer::Allocate(f.experts * f.n * f.k * 2);
    auto c = DeviceBuffer::Allocate(f.experts * f.rows * f.n * 2), pointers = DeviceBuffer::Allocate(3 * f.experts * 8);
    for (auto* buffer : {&a, &b, &c, &pointers}) CheckOrDie(buffer->status(), "alloc");
    CheckOrDie(cuda::LaunchFillUniformBf16(a->as<uint16_t>(), f.experts * f.rows * f.k, 11, 1.0f, stream), "fill");
    CheckOrDie(cuda::LaunchFillUniformBf16(b->as<uint16_t>(), f.experts * f.n * f.k, 12, 0.02f, stream), "fill");
    std::vector<const void*> host(3 * f.experts);
    for (int64_t e = 0; e < f.experts; ++e) {
      host[e] = a->as<uint16_t>() + e * f.rows * f.k;
      host[f.experts + e] = b->as<uint16_t>() + e * f.n * f.k;
      host[2 * f.experts + e] = c->as<uint16_t>() + e * f.rows * f.n;
    }
    CheckOrDie(pointers->CopyFromHost(host.data(), host.size() * 8), "upload");
    auto* const* device = pointers->as<void*>();
    cuda::GemmShape shape;
    shape.m = f.rows;
    shape.n = f.n;
    shape.k = f.k;
    shape.lda = shape.ldb = f.k;
    shape.ldc = f.n;
    const double flops = 2.0 * f.experts * f.rows * f.n * f.k;
    const auto add = [&](const char* form, double ms) {
      const double tflops = flops / (ms * 1e-3) / 1e12;
      report.Add(absl::StrFormat("gemm form\t%s, %lld experts x %lld rows (N %lld, K %lld): %s\t%.4f ms\t%.0f "
                                 "TFLOP/s = %.0f%% of cuBLAS",
                                 f.name, (long long)f.experts, (long long)f.rows, (long long)f.n, (long long)f.k, form,
                                 ms, tflops, 100.0 * tflops / ceilings.gemm_tflops));
    };
    add("pointer batch", MedianMilliseconds(stream, 3, 20, [&](int) {
          return blas.GemmPointerBatch(shape, device, device + f.experts, device + 2 * f.experts, f.experts,
                                       cuda::ElementType::kBF16, cuda::ElementType::kBF16, stream);
        }));
    cuda::GemmShape strided = shape;
    strided.batch = f.experts;
    strided.stride_a = f.rows * f.k;
    strided.stride_b = f.n * f.k;
    strided.stride_c = f.rows * f.n;
    add("strided batch", MedianMilliseconds(stream, 3, 20, [&](int) {
          return blas.Gemm(strided, a->data(), b->data(), c->data(), cuda::ElementType::kBF16, cuda::ElementType::kBF16,
                           stream);
        }));
    cuda::GemmShape dense = shape;
    dense.m = f.experts * f.rows;
    add("one dense GEMM, one weight matrix", MedianMilliseconds(stream, 3, 20, [&](int) {
          return blas.Gemm(dense, a->data(), b->data(), c->data(), cuda::ElementType::kBF16, cuda::ElementType::kBF16,
                           stream);
        }));
  }
}

}  // namespace expertmesh::bench
