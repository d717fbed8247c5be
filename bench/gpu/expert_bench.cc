// GPU expert-path benchmark (one binary, one device call): measures the two ceilings first — copy
// bandwidth (bytes read + written) and cuBLAS bf16 GEMM TFLOP/s on random data — then the routed
// expert FFN of DeepSeek-V3- and V2-Lite-shaped MoE layers (random weights generated on the
// device) for decode (1-256 tokens: touched expert weight bytes / time vs copy bandwidth) and
// prefill (4k-16k tokens: TFLOP/s vs the cuBLAS ceiling) on every product path, and the
// Assembly-of-Experts blend (GB/s vs copy bandwidth). Prints a table; --tsv FILE writes rows.
// --quick: V2-Lite only; --v3-only, --fp8-only (V3 FP8 alone), --no-blend, --tokens 1,4 and
// --variants direct-mma,auto narrow a run (for profilers); --routing-skew S routes by uneven expert
// popularity (see RandomRouting); --read-patterns adds the decode read pattern's own speed
// (BenchReadPatterns) and reads and copies by size (BenchReadSizes); --profile-one runs one more
// call of each variant between cudaProfilerStart/Stop (ncu --profile-from-start off); --gemm-forms
// compares prefill's cuBLAS product forms (BenchGemmForms).
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/gpu/gpu_timer.h"
#include "bench/gpu/bench_report.h"
#include "bench/gpu/memory_probes.h"
#include "engine/model/cuda/cuda_routed_experts.h"
#include "engine/ops/cuda/blend_kernels.h"
#include "engine/ops/cuda/cublas_gemm.h"
#include "engine/ops/cuda/cuda_device.h"
#include "engine/ops/cuda/few_token_experts.h"

namespace expertmesh::bench {
namespace {

using cuda::DeviceBuffer;

Ceilings MeasureCeilings(cudaStream_t stream, Report& report) {
  Ceilings c;
  const int64_t bytes = int64_t(2) << 30;
  auto a = DeviceBuffer::Allocate(bytes), b = DeviceBuffer::Allocate(bytes);
  CheckOrDie(a.status(), "alloc");
  CheckOrDie(b.status(), "alloc");
  CheckOrDie(cuda::LaunchFillUniformF32(a->as<float>(), bytes / 4, 1, 1.0f, stream), "fill");
  const double memcpy_ms = MedianMilliseconds(stream, 3, 20, [&](int) {
    return cudaMemcpyAsync(b->data(), a->data(), bytes, cudaMemcpyDeviceToDevice, stream) == cudaSuccess
               ? absl::OkStatus() : absl::InternalError("memcpy");
  });
  const double kernel_ms = MedianMilliseconds(stream, 3, 20, [&](int) {
    return cuda::LaunchStreamCopy(a->data(), b->data(), bytes, stream);
  });
  const double memcpy_gbps = 2.0 * bytes / (memcpy_ms * 1e-3) / 1e9;
  const double kernel_gbps = 2.0 * bytes / (kernel_ms * 1e-3) / 1e9;
  c.copy_gbps = std::max(memcpy_gbps, kernel_gbps);
  report.Add(absl::StrFormat("ceiling\tcopy\tcudaMemcpy D2D 2 GiB\t%.1f GB/s (read+write)", memcpy_gbps));
  report.Add(absl::StrFormat("ceiling\tcopy\tstreaming kernel 2 GiB\t%.1f GB/s (read+write)", kernel_gbps));

  auto blas = cuda::CublasContext::Create();
  CheckOrDie(blas.status(), "cublas");
  const int64_t n = 8192;
  auto ga = DeviceBuffer::Allocate(n * n * 2), gb = DeviceBuffer::Allocate(n * n * 2), gc = DeviceBuffer::Allocate(n * n * 2);
  CheckOrDie(cuda::LaunchFillUniformBf16(ga->as<uint16_t>(), n * n, 2, 1.0f, stream), "fill");
  CheckOrDie(cuda::LaunchFillUniformBf16(gb->as<uint16_t>(), n * n, 3, 1.0f, stream), "fill");
  const double gemm_ms = MedianMilliseconds(stream, 3, 20, [&](int) {
    return (*blas)->Linear(ga->data(), n, n, gb->data(), n, gc->data(), cuda::ElementType::kBF16,
                           cuda::ElementType::kBF16, stream);
  });
  c.gemm_tflops = 2.0 * n * n * n / (gemm_ms * 1e-3) / 1e12;
  report.Add(absl::StrFormat("ceiling\tgemm\tcuBLAS bf16 8192^3 random\t%.1f TFLOP/s", c.gemm_tflops));
  return c;
}

struct MoeShape {
  const char* name;
  int64_t hidden, intermediate, n_routed, top_k, shard_experts;
};


// Expert ids [tokens, top_k], distinct per token, drawn from all n_routed experts: uniformly, or
// with skew > 0 in proportion to per-expert popularities exp(skew * z), z ~ N(0, 1) (real routers
// favour some experts; skew 1 makes the hottest expert of 256 get several times the mean load).
// Slots outside the shard (experts >= shard_experts) are empty (-1), as a fan-out sends them.
std::vector<int32_t> RandomRouting(const MoeShape& s, int64_t tokens, double skew, std::mt19937_64& rng,
                                   int64_t* local_slots, std::vector<int>* touched) {
  std::vector<int32_t> ids;
  std::vector<double> popularity(s.n_routed, 1.0);
  if (skew > 0) {
    std::mt19937_64 popularity_rng(1234);  // the same popularities for every routing of a shape
    std::normal_distribution<double> z(0.0, 1.0);
    for (double& p : popularity) p = std::exp(skew * z(popularity_rng));
  }
  touched->assign(s.shard_experts, 0);
  *local_slots = 0;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<std::pair<double, int32_t>> keys(s.n_routed);
  std::vector<int32_t> pool(s.n_routed);
  for (int64_t e = 0; e < s.n_routed; ++e) pool[e] = static_cast<int32_t>(e);
  for (int64_t t = 0; t < tokens; ++t) {
    if (skew > 0) {
      // Weighted sampling without replacement: the top_k largest u^(1 / weight) keys.
      for (int64_t e = 0; e < s.n_routed; ++e) {
        keys[e] = {std::pow(unit(rng), 1.0 / popularity[e]), static_cast<int32_t>(e)};
      }
      std::partial_sort(keys.begin(), keys.begin() + s.top_k, keys.end(), std::greater<>());
      for (int64_t k = 0; k < s.top_k; ++k) pool[k] = keys[k].second;
    } else {
      // Uniform: a partial shuffle (top_k draws, not n_routed; the routings of earlier runs).
      for (int64_t k = 0; k < s.top_k; ++k) {
        std::uniform_int_distribution<int64_t> pick(k, s.n_routed - 1);
        std::swap(pool[k], pool[pick(rng)]);
      }
    }
    for (int64_t k = 0; k < s.top_k; ++k) {
      const int32_t e = pool[k];
      if (e < s.shard_experts) {
        ids.push_back(e);
        (*touched)[e] = 1;
        ++*local_slots;
      } else {
        ids.push_back(-1);
      }
    }
  }
  return ids;
}

// Restricts a run (e.g. under ncu): only these token counts / variant names (empty = all).
struct Selection {
  std::vector<int64_t> tokens;
  std::vector<std::string> variants;
  double routing_skew = 0;
  bool profile_one = false;  // one more call of each variant between cudaProfilerStart/Stop (ncu)
  bool Wants(int64_t count) const {
    return tokens.empty() || std::find(tokens.begin(), tokens.end(), count) != tokens.end();
  }
  bool Wants(const std::string& name) const {
    return variants.empty() || std::find(variants.begin(), variants.end(), name) != variants.end();
  }
};

void BenchExperts(const MoeShape& s, GpuExpertFormat format, const Ceilings& ceilings, cudaStream_t stream,
                  const Selection& selection, Report& report) {
  constexpr int kLayers = 4;    // rotate layers so no repetition finds its weights in L2
  constexpr int kRoutings = 6;  // and different routings
  CudaExpertOptions options{s.hidden, s.intermediate, s.n_routed, format};
  auto experts_or = CudaRoutedExperts::Create(options);
  CheckOrDie(experts_or.status(), "create experts");
  CudaRoutedExperts& experts = **experts_or;
  for (int layer = 0; layer < kLayers; ++layer) {
    for (int32_t e = 0; e < s.shard_experts; ++e) {
      auto view = experts.MutableDeviceWeights(layer, e);
      CheckOrDie(view.status(), "weights");
      const uint64_t seed = uint64_t(layer) * 1000 + e;
      if (format == GpuExpertFormat::kFP8Block) {
        CheckOrDie(cuda::LaunchFillUniformFp8(static_cast<uint8_t*>(view->gate_up), view->gate_up_bytes, seed, 0.5f,
                                              stream), "fill");
        CheckOrDie(cuda::LaunchFillUniformFp8(static_cast<uint8_t*>(view->down), view->down_bytes, seed + 7, 0.5f,
                                              stream), "fill");
        CheckOrDie(cuda::LaunchFillUniformF32(view->gate_up_scale, view->gate_up_scale_bytes / 4, seed + 3, 1e-4f,
                                              stream), "fill");
        CheckOrDie(cuda::LaunchFillUniformF32(view->down_scale, view->down_scale_bytes / 4, seed + 5, 1e-4f, stream),
                   "fill");
      } else {
        CheckOrDie(cuda::LaunchFillUniformBf16(static_cast<uint16_t*>(view->gate_up), view->gate_up_bytes / 2, seed,
                                               0.02f, stream), "fill");
        CheckOrDie(cuda::LaunchFillUniformBf16(static_cast<uint16_t*>(view->down), view->down_bytes / 2, seed + 7,
                                               0.02f, stream), "fill");
      }
    }
  }
  const double expert_bytes = double(experts.DeviceWeightBytes()) / (kLayers * s.shard_experts);
  report.Add(absl::StrFormat("experts\t%s %s\t%lld experts x %d layers on the device\t%.2f GiB (%.1f MB per expert)",
                             s.name, format == GpuExpertFormat::kFP8Block ? "fp8" : "bf16",
                             (long long)s.shard_experts, kLayers, experts.DeviceWeightBytes() / double(1 << 30),
                             expert_bytes / 1e6));
  std::mt19937_64 rng(42);
  for (int64_t tokens : {1, 2, 4, 16, 64, 128, 256, 4096, 16384}) {
    if (!selection.Wants(tokens)) continue;
    const bool prefill = tokens >= 4096;
    auto x = DeviceBuffer::Allocate(tokens * s.hidden * 4);
    auto out = DeviceBuffer::Allocate(tokens * s.hidden * 4);
    CheckOrDie(x.status(), "alloc");
    CheckOrDie(out.status(), "alloc");
    CheckOrDie(cuda::LaunchFillUniformF32(x->as<float>(), tokens * s.hidden, 9, 1.0f, stream), "fill");
    std::vector<DeviceBuffer> ids(kRoutings), weights(kRoutings);
    double touched_bytes = 0, local_rows = 0;
    for (int r = 0; r < kRoutings; ++r) {
      int64_t local = 0;
      std::vector<int> touched;
      std::vector<int32_t> routing = RandomRouting(s, tokens, selection.routing_skew, rng, &local, &touched);
      for (int t : touched) touched_bytes += t * expert_bytes / kRoutings;
      local_rows += double(local) / kRoutings;
      std::vector<float> gate(routing.size(), 0.125f);
      ids[r] = std::move(DeviceBuffer::Allocate(routing.size() * 4)).value();
      weights[r] = std::move(DeviceBuffer::Allocate(gate.size() * 4)).value();
      CheckOrDie(ids[r].CopyFromHost(routing.data(), routing.size() * 4), "upload");
      CheckOrDie(weights[r].CopyFromHost(gate.data(), gate.size() * 4), "upload");
    }
    CheckOrDie(experts.Reserve(tokens, s.top_k), "reserve");
    // cuBLAS paths first: their per-shape heuristics are then warm for the auto run.
    // The tensor-core path twice: with the grid over every local expert and 8-way split-k (the
    // phase-1 launch shape) and with the compact grid (only experts with rows, adaptive split-k).
    // The compact grid also with register weight loads instead of the cp.async rings.
    // The few-token kernels (<= 4 tokens) with the down kernel launched as a programmatic
    // dependent and in plain stream order, and with one warp per weight row instead of two where
    // the rows are few. "auto" is what the services run; "auto-bucket-11.5us" plans the batched
    // path's row buckets with a bucket modeled at 11.5 us instead of 40 (RowBucketModel).
    struct Variant {
      ExpertGemmPath path;
      bool compact;
      bool ring;
      const char* name;
      bool programmatic = true;
      bool fp8_activations = true;
      int row_buckets = 4;
      int warps_per_row = 0;
      double bucket_overhead_us = RowBucketModel{}.bucket_overhead_us;
    };
    const Variant variants[] = {{ExpertGemmPath::kCublasLoop, true, true, "cublas-loop"},
                                {ExpertGemmPath::kCublasStreams, true, true, "cublas-4-streams"},
                                {ExpertGemmPath::kCublasBatched, true, true, "cublas-batched-one-bucket", true, true, 1},
                                {ExpertGemmPath::kCublasBatched, true, true, "cublas-batched"},
                                {ExpertGemmPath::kDirect, false, false, "direct-mma-every-expert-grid"},
                                {ExpertGemmPath::kDirect, true, false, "direct-mma-registers"},
                                {ExpertGemmPath::kDirect, true, true, "direct-mma"},
                                {ExpertGemmPath::kFewTokens, true, true, "few-tokens-stream-order", false},
                                {ExpertGemmPath::kFewTokens, true, true, "few-tokens"},
                                {ExpertGemmPath::kFewTokens, true, true, "few-tokens-one-warp-per-row", true, true, 4, 1},
                                {ExpertGemmPath::kCublasFp8, true, true, "cublas-fp8-w8a8"},
                                {ExpertGemmPath::kAuto, true, true, "auto-bf16-activations", true, false},
                                {ExpertGemmPath::kAuto, true, true, "auto"},
                                {ExpertGemmPath::kAuto, true, true, "auto-bucket-11.5us", true, true, 4, 0, 11.5}};
    for (const Variant& variant : variants) {
      if (!selection.Wants(std::string(variant.name))) continue;
      const ExpertGemmPath path = variant.path;
      if (prefill && path == ExpertGemmPath::kDirect && tokens > 4096) continue;  // many passes: far too slow
      if (prefill && path == ExpertGemmPath::kDirect && !variant.compact) continue;
      if (path == ExpertGemmPath::kFewTokens && tokens > cuda::kFewTokenMaxTokens) continue;
      const bool fp8 = format == GpuExpertFormat::kFP8Block;
      if ((path == ExpertGemmPath::kCublasFp8 || !variant.fp8_activations) && (!fp8 || tokens < 16)) continue;
      experts.set_path(path);
      experts.set_compact_expert_grid(variant.compact);
      experts.set_weight_ring(variant.ring);
      experts.set_programmatic_launch(variant.programmatic);
      experts.set_fp8_activations(variant.fp8_activations);
      experts.set_batched_row_buckets(variant.row_buckets);
      experts.set_few_token_warps_per_row(variant.warps_per_row);
      RowBucketModel bucket_model;
      bucket_model.bucket_overhead_us = variant.bucket_overhead_us;
      experts.set_row_bucket_model(bucket_model);
      {
        // Every routing once before timing: cuBLAS picks and loads kernels per GEMM shape on first
        // use, which a serving process pays once per shape, not per call (see PlanExpertRowBuckets).
        absl::Status status;
        for (int r = 0; r < kRoutings && status.ok(); ++r) {
          DeviceExpertBatch probe{0, tokens, s.top_k, x->as<float>(), ids[r].as<int32_t>(), weights[r].as<float>(),
                                  out->as<float>(), false};
          status = experts.ComputeOnDevice(probe, stream);
        }
        if (!status.ok()) {
          report.Add(absl::StrFormat("experts\t%s %s\ttokens %lld\tFAILED: %s", s.name, variant.name,
                                     (long long)tokens, std::string(status.message())));
          cudaGetLastError();
          continue;
        }
      }
      const int repetitions = prefill ? 6 : 30;
      const double ms = MedianMilliseconds(stream, 2, repetitions, [&](int i) {
        DeviceExpertBatch batch{i % kLayers, tokens, s.top_k, x->as<float>(), ids[i % kRoutings].as<int32_t>(),
                                weights[i % kRoutings].as<float>(), out->as<float>(), false};
        return experts.ComputeOnDevice(batch, stream);
      });
      CheckOrDie(experts.DeviceErrors(stream), "device errors");
      if (selection.profile_one) {  // for ncu --profile-from-start off: the kernels of one call
        CheckCuda(cudaProfilerStart(), "cudaProfilerStart");
        DeviceExpertBatch batch{0, tokens, s.top_k, x->as<float>(), ids[0].as<int32_t>(), weights[0].as<float>(),
                                out->as<float>(), false};
        CheckOrDie(experts.ComputeOnDevice(batch, stream), "profiled call");
        CheckCuda(cudaStreamSynchronize(stream), "profiled call");
        CheckCuda(cudaProfilerStop(), "cudaProfilerStop");
      }
      const double gbps = touched_bytes / (ms * 1e-3) / 1e9;
      const double tflops = local_rows * 6.0 * s.hidden * s.intermediate / (ms * 1e-3) / 1e12;
      // Roofline: the touched weights must stream in at copy bandwidth and the products run at the
      // cuBLAS ceiling at best, so no path can exceed flop time / max(flop time, weight time).
      const double flop_seconds = local_rows * 6.0 * s.hidden * s.intermediate / (ceilings.gemm_tflops * 1e12);
      const double weight_seconds = touched_bytes / (ceilings.copy_gbps * 1e9);
      const double attainable = 100.0 * flop_seconds / std::max(flop_seconds, weight_seconds);
      report.Add(absl::StrFormat(
          "experts\t%s %s %s\ttokens %lld (local rows %.0f%s)\t%.3f ms\t%.0f GB/s weights = %.0f%% of copy\t%.1f "
          "TFLOP/s = %.0f%% of cuBLAS (roofline %.0f%%)",
          s.name, format == GpuExpertFormat::kFP8Block ? "fp8" : "bf16", variant.name, (long long)tokens, local_rows,
          selection.routing_skew > 0 ? absl::StrFormat(", skew %.1f", selection.routing_skew) : "", ms, gbps,
          100.0 * gbps / ceilings.copy_gbps, tflops, 100.0 * tflops / ceilings.gemm_tflops, attainable));
    }
  }
}

void BenchBlend(const Ceilings& ceilings, cudaStream_t stream, Report& report) {
  const int64_t elements = int64_t(256) << 20;  // 512 MB of bf16 per parent
  std::vector<DeviceBuffer> parents_storage;
  for (int p = 0; p < 3; ++p) {
    parents_storage.push_back(std::move(DeviceBuffer::Allocate(elements * 2)).value());
    CheckOrDie(cuda::LaunchFillUniformBf16(parents_storage[p].as<uint16_t>(), elements, 100 + p, 0.05f, stream), "fill");
  }
  auto out = DeviceBuffer::Allocate(elements * 2);
  auto sums = DeviceBuffer::Allocate(cuda::kMaxBlendParents * 8);
  CheckOrDie(out.status(), "alloc");
  for (int count : {2, 3}) {
    cuda::BlendParents parents;
    parents.count = count;
    for (int p = 0; p < count; ++p) {
      parents.tensors[p] = parents_storage[p].as<uint16_t>();
      parents.lambdas[p] = 1.0f / count;
    }
    const double blend_ms = MedianMilliseconds(stream, 3, 20, [&](int) {
      return cuda::LaunchBlend(parents, elements, nullptr, 0.0f, out->as<uint16_t>(), nullptr, stream);
    });
    const double with_test_ms = MedianMilliseconds(stream, 3, 20, [&](int) {
      if (cudaMemsetAsync(sums->data(), 0, cuda::kMaxBlendParents * 8, stream) != cudaSuccess) {
        return absl::InternalError("memset");
      }
      absl::Status s = cuda::LaunchBlendDifferenceNorms(parents, elements, sums->as<double>(), stream);
      if (!s.ok()) return s;
      return cuda::LaunchBlend(parents, elements, sums->as<double>(), 0.01f, out->as<uint16_t>(), nullptr, stream);
    });
    const double blend_bytes = double(count + 1) * elements * 2;
    const double gbps = blend_bytes / (blend_ms * 1e-3) / 1e9;
    const double test_bytes = double(2 * count + 1) * elements * 2;
    const double test_gbps = test_bytes / (with_test_ms * 1e-3) / 1e9;
    report.Add(absl::StrFormat("blend\t%d parents x 512 MB bf16\tblend only %.3f ms\t%.0f GB/s = %.0f%% of copy", count,
                               blend_ms, gbps, 100.0 * gbps / ceilings.copy_gbps));
    report.Add(absl::StrFormat("blend\t%d parents x 512 MB bf16\tdelta test + blend %.3f ms\t%.0f GB/s moved = %.0f%% "
                               "of copy (%.2fx the blend-only time)",
                               count, with_test_ms, test_gbps, 100.0 * test_gbps / ceilings.copy_gbps,
                               with_test_ms / blend_ms));
  }
}

}  // namespace
}  // namespace expertmesh::bench

int main(int argc, char** argv) {
  using namespace expertmesh;
  using namespace expertmesh::bench;
  bench::Report report;
  bool quick = false, v3_only = false, fp8_only = false, no_blend = false, read_patterns = false, gemm_forms = false;
  Selection selection;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--tsv") == 0 && i + 1 < argc) report.tsv = std::fopen(argv[++i], "w");
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--v3-only") == 0) v3_only = true;
    if (std::strcmp(argv[i], "--fp8-only") == 0) fp8_only = v3_only = true;
    if (std::strcmp(argv[i], "--no-blend") == 0) no_blend = true;
    if (std::strcmp(argv[i], "--read-patterns") == 0) read_patterns = true;
    if (std::strcmp(argv[i], "--gemm-forms") == 0) gemm_forms = true;
    if (std::strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
      for (absl::string_view part : absl::StrSplit(argv[++i], ',', absl::SkipEmpty())) {
        selection.tokens.push_back(std::stoll(std::string(part)));
      }
    }
    if (std::strcmp(argv[i], "--profile-one") == 0) selection.profile_one = true;
    if (std::strcmp(argv[i], "--routing-skew") == 0 && i + 1 < argc) selection.routing_skew = std::stod(argv[++i]);
    if (std::strcmp(argv[i], "--variants") == 0 && i + 1 < argc) {
      for (absl::string_view part : absl::StrSplit(argv[++i], ',', absl::SkipEmpty())) {
        selection.variants.emplace_back(part);
      }
    }
  }
  auto device = cuda::DescribeDevice();
  if (!device.ok()) {
    std::printf("skipped: no GPU (%s)\n", std::string(device.status().message()).c_str());
    return 0;
  }
  report.Add("device\t" + *device);
  cudaStream_t stream = nullptr;
  CheckCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  const Ceilings ceilings = MeasureCeilings(stream, report);
  if (read_patterns) BenchReadPatterns(ceilings, stream, report);
  if (gemm_forms) BenchGemmForms(ceilings, stream, report);
  if (!no_blend) BenchBlend(ceilings, stream, report);
  const MoeShape v3{"V3 (H7168 I2048 256e top8, shard 32)", 7168, 2048, 256, 8, 32};
  const MoeShape v2{"V2-Lite (H2048 I1408 64e top6, shard 64)", 2048, 1408, 64, 6, 64};
  if (!v3_only) BenchExperts(v2, GpuExpertFormat::kBF16, ceilings, stream, selection, report);
  if (!quick) {
    if (!fp8_only) BenchExperts(v3, GpuExpertFormat::kBF16, ceilings, stream, selection, report);
    BenchExperts(v3, GpuExpertFormat::kFP8Block, ceilings, stream, selection, report);
  }
  if (report.tsv != nullptr) std::fclose(report.tsv);
  return 0;
}
