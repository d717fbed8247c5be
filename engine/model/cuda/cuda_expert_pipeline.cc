// CudaRoutedExperts' batch pipeline on the device: path choice (few-token kernels for decode
// batches; else permutation by expert, then tensor-core kernels for few rows per expert or, for
// many, cuBLAS per-expert GEMMs on several streams or one pointer batch padded to the largest
// expert, then the weighted combine).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/model/cuda/cuda_routed_experts.h"
#include "engine/model/expert_row_buckets.h"
#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/few_token_experts.h"
#include "engine/ops/cuda/moe_kernels.h"

namespace expertmesh {
namespace {

using cuda::CudaStatus;
using cuda::ElementType;

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

absl::Status CudaRoutedExperts::RunExperts(const LayerStorage& layer, const DeviceExpertBatch& batch, void* stream) {
  Scratch& s = *scratch_;
  const int64_t tokens = batch.num_tokens, top_k = batch.top_k;
  const int64_t slots = tokens * top_k;
  const int64_t hidden = options_.hidden_size, intermediate = options_.intermediate_size;
  const int64_t num_local = static_cast<int64_t>(layer.slots.size());
  if (tokens == 0) return absl::OkStatus();
  const bool f32 = options_.format == GpuExpertFormat::kF32;
  const bool fp8 = options_.format == GpuExpertFormat::kFP8Block;
  ExpertGemmPath path = options_.path;
  // Few-token kernels (measured on an H100, bench/RESULTS.md): decode batches of bf16 or FP8
  // experts up to few_token_max_tokens tokens, in kAuto and inside CUDA graphs.
  const absl::Status few_tokens =
      f32 ? absl::FailedPreconditionError("few-token expert kernels take bf16 or FP8 experts, not float32")
          : cuda::CheckFewTokenExperts(tokens, top_k, hidden, intermediate, fp8);
  if (path == ExpertGemmPath::kFewTokens) {
    if (!few_tokens.ok()) return few_tokens;
    return RunFewTokens(layer, batch, stream);
  }
  if ((path == ExpertGemmPath::kAuto || batch.capturable) && few_tokens.ok() &&
      tokens <= options_.few_token_max_tokens) {
    return RunFewTokens(layer, batch, stream);
  }
  EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchBuildExpertPermutation(
      batch.expert_ids, slots, top_k, layer.device_slot_of_expert.as<int32_t>(), options_.n_routed_experts, num_local,
      s.offsets.as<int32_t>(), s.row_token.as<int32_t>(), s.row_of_slot.as<int32_t>(), s.active.as<int32_t>(),
      s.error.as<int32_t>(), s.permutation_work.as<int32_t>(),
      static_cast<int64_t>(s.permutation_work.bytes() / sizeof(int32_t)), stream));

  // Above that (kAuto, measured on an H100, bench/RESULTS.md): inside CUDA graphs the tensor-core
  // kernels (no host synchronisation); float32 experts cuBLAS on several streams; bf16 experts the
  // kernels for batches of at most max_tokens_for_direct_kernels tokens and the padded cuBLAS
  // batch above; FP8 experts the W8A8 GEMMs from fp8_products_min_tokens tokens (fp8_activations,
  // where cuBLASLt allows), else the kernels while no expert has more than
  // max_rows_for_direct_kernels rows, then the W8A8 GEMMs or the padded batch over dequantized
  // groups.
  if (batch.capturable) {
    if (f32) return absl::FailedPreconditionError("float32 experts cannot run inside a CUDA graph (cuBLAS path)");
    path = ExpertGemmPath::kDirect;
  }
  if (f32 && (path == ExpertGemmPath::kAuto || path == ExpertGemmPath::kDirect)) path = ExpertGemmPath::kCublasStreams;
  if (path == ExpertGemmPath::kAuto && !fp8 && options_.batched_cublas) {
    path = tokens <= options_.max_tokens_for_direct_kernels ? ExpertGemmPath::kDirect : ExpertGemmPath::kCublasBatched;
  }
  // kAuto's W8A8 products: FP8 experts, fp8_activations, and cuBLASLt able to run them here.
  const auto w8a8_products = [&] { return fp8 && options_.fp8_activations && Fp8ProductsAvailableLocked().ok(); };
  if (path == ExpertGemmPath::kAuto && tokens >= options_.fp8_products_min_tokens && w8a8_products()) {
    path = ExpertGemmPath::kCublasFp8;
  }
  // Rows per expert never exceed the token count (a token picks an expert at most once).
  if (path == ExpertGemmPath::kAuto && tokens <= options_.max_rows_for_direct_kernels) path = ExpertGemmPath::kDirect;
  if (path == ExpertGemmPath::kCublasBatched && f32) path = ExpertGemmPath::kCublasStreams;
  // Gathered rows: float32 for float32 experts, f16 for FP8 experts on the tensor-core kernels,
  // else bf16; each token's row of x read once and written to the rows of its slots.
  const auto gather = [&](ExpertGemmPath for_path) {
    const cuda::RowType type = f32 ? cuda::RowType::kF32
                                   : (for_path == ExpertGemmPath::kDirect && fp8 ? cuda::RowType::kF16
                                                                                 : cuda::RowType::kBF16);
    return cuda::LaunchGatherRows(batch.activations, s.row_of_slot.as<int32_t>(), tokens, top_k, hidden,
                                  s.rows.data(), type, stream);
  };
  bool gathered = false;
  std::vector<int32_t> offsets;
  if (path != ExpertGemmPath::kDirect) {
    // The host needs the row counts. Where the path (so the rows' type) is already known, the
    // gather runs on `stream` meanwhile and the counts come back over helper lane 1, so the wait
    // and the host's planning overlap the gather (scratch for every slot's row up front).
    void* copy_stream = stream;
    if (path != ExpertGemmPath::kAuto && path != ExpertGemmPath::kCublasFp8) {
      EXPERTMESH_RETURN_IF_ERROR(EnsureScratch(tokens, top_k, slots + kBatchedRowAlignment));
      void* lanes[kCublasStreams] = {stream};
      EXPERTMESH_RETURN_IF_ERROR(ForkLanes(2, stream, lanes));
      copy_stream = lanes[1];
      EXPERTMESH_RETURN_IF_ERROR(gather(path));
      gathered = true;
    }
    offsets.resize(num_local + 1);
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(offsets.data(), s.offsets.data(),
                                                          offsets.size() * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                                          AsStream(copy_stream)), "offsets download"));
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(AsStream(copy_stream)), "expert permutation"));
    if (path == ExpertGemmPath::kAuto) {
      int32_t largest = 0;
      for (int64_t e = 0; e < num_local; ++e) largest = std::max(largest, offsets[e + 1] - offsets[e]);
      path = largest <= options_.max_rows_for_direct_kernels
                 ? ExpertGemmPath::kDirect
                 : (options_.batched_cublas ? ExpertGemmPath::kCublasBatched : ExpertGemmPath::kCublasStreams);
      if (path != ExpertGemmPath::kDirect && w8a8_products()) path = ExpertGemmPath::kCublasFp8;
    }
  }
  const int64_t rows = offsets.empty() ? slots : offsets[num_local];
  // The batched path's padded reads go past the last row by up to its aligned bucket count (see
  // RunCublasBatched): room for kBatchedRowAlignment more float32 rows covers that.
  EXPERTMESH_RETURN_IF_ERROR(
      EnsureScratch(tokens, top_k, rows + (path == ExpertGemmPath::kCublasBatched ? kBatchedRowAlignment : 0)));
  // What the combine reads: float32 rows, or the padded bf16 rows of the batched and W8A8 paths.
  const void* y = s.y.data();
  const int32_t* row_of_slot = s.row_of_slot.as<int32_t>();
  const bool padded_bf16 = path == ExpertGemmPath::kCublasBatched || path == ExpertGemmPath::kCublasFp8;
  if (path == ExpertGemmPath::kCublasFp8) {  // reads the activations itself
    EXPERTMESH_RETURN_IF_ERROR(RunCublasFp8(layer, batch, offsets, &y, &row_of_slot, stream));
    return cuda::LaunchCombineExpertRows(y, row_of_slot, batch.gate_weights, tokens, top_k, hidden, batch.output,
                                         batch.accumulate, stream, padded_bf16);
  }
  if (!gathered) EXPERTMESH_RETURN_IF_ERROR(gather(path));
  if (path == ExpertGemmPath::kDirect) {
    auto* const* pointers = layer.device_pointers.as<const void*>();
    const auto* scales = reinterpret_cast<const float* const*>(pointers + 2 * num_local);
    cuda::ExpertGrid gate_up_grid, down_grid;  // phase-1 grid: every local slot, 8-way split-k
    gate_up_grid.experts = down_grid.experts = num_local;
    if (options_.compact_expert_grid) {
      // Only slots with rows (at most one per token slot); split-k sized for the experts that
      // uniform routing would give rows (the grid is fixed before the routing is known).
      const int64_t grid_experts = std::min<int64_t>(num_local, slots);
      const double miss = 1.0 - static_cast<double>(top_k) / std::max<int64_t>(options_.n_routed_experts, 1);
      const auto expected = static_cast<int64_t>(
          std::ceil(num_local * (1.0 - std::pow(std::max(miss, 0.0), static_cast<double>(tokens)))));
      const int64_t target_warps = int64_t(sm_count_) * 16;
      gate_up_grid = {grid_experts, s.active.as<int32_t>(),
                      cuda::ChooseSplitK((intermediate + 7) / 8, expected, hidden, target_warps)};
      down_grid = {grid_experts, s.active.as<int32_t>(),
                   cuda::ChooseSplitK((hidden + 15) / 16, expected, intermediate, target_warps)};
    }
    gate_up_grid.weight_ring = down_grid.weight_ring = options_.weight_ring;
    EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchExpertGateUp(s.rows.as<uint16_t>(), s.offsets.as<int32_t>(), gate_up_grid,
                                                        pointers, scales, fp8, hidden, intermediate,
                                                        s.h.as<uint16_t>(), stream));
    EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchExpertDown(s.h.as<uint16_t>(), s.offsets.as<int32_t>(), down_grid,
                                                      pointers + num_local, scales + num_local, fp8, hidden,
                                                      intermediate, s.y.as<float>(), stream));
  } else if (path == ExpertGemmPath::kCublasBatched) {
    EXPERTMESH_RETURN_IF_ERROR(RunCublasBatched(layer, offsets, slots, &y, &row_of_slot, stream));
  } else {
    EXPERTMESH_RETURN_IF_ERROR(
        RunCublas(layer, offsets, path == ExpertGemmPath::kCublasStreams ? kCublasStreams : 1, stream));
  }
  return cuda::LaunchCombineExpertRows(y, row_of_slot, batch.gate_weights, tokens, top_k, hidden, batch.output,
                                       batch.accumulate, stream, padded_bf16);
}

absl::Status CudaRoutedExperts::RunFewTokens(const LayerStorage& layer, const DeviceExpertBatch& batch, void* stream) {
  Scratch& s = *scratch_;
  const int64_t num_local = static_cast<int64_t>(layer.slots.size());
  EXPERTMESH_RETURN_IF_ERROR(EnsureScratch(batch.num_tokens, batch.top_k, batch.num_tokens * batch.top_k));
  auto* const* pointers = layer.device_pointers.as<const void*>();
  const auto* scales = reinterpret_cast<const float* const*>(pointers + 2 * num_local);
  cuda::FewTokenExpertBatch few;
  few.tokens = batch.num_tokens;
  few.top_k = batch.top_k;
  few.hidden = options_.hidden_size;
  few.intermediate = options_.intermediate_size;
  few.activations = batch.activations;
  few.expert_ids = batch.expert_ids;
  few.gate_weights = batch.gate_weights;
  few.slot_of_expert = layer.device_slot_of_expert.as<int32_t>();
  few.n_routed = options_.n_routed_experts;
  few.gate_up = pointers;
  few.down = pointers + num_local;
  few.gate_up_scale = scales;
  few.down_scale = scales + num_local;
  few.fp8 = options_.format == GpuExpertFormat::kFP8Block;
  few.warps_per_row = options_.few_token_warps_per_row;
  few.h = s.h.as<uint16_t>();
  few.output = batch.output;
  few.accumulate = batch.accumulate;
  few.error = s.error.as<int32_t>();
  few.programmatic_launch = options_.programmatic_launch;
  return cuda::LaunchFewTokenExperts(few, sm_count_, stream);
}

absl::Status CudaRoutedExperts::RunCublasBatched(const LayerStorage& layer, std::span<const int32_t> offsets,
                                                 int64_t slots, const void** y, const int32_t** row_of_slot,
                                                 void* stream) {
  Scratch& s = *scratch_;
  const int64_t hidden = options_.hidden_size, intermediate = options_.intermediate_size;
  const int64_t num_local = static_cast<int64_t>(offsets.size()) - 1;
  const std::vector<ExpertRowBucket> buckets =
      PlanExpertRowBuckets(offsets, options_.batched_row_buckets, kBatchedRowAlignment,
                           CostsOfExpertRows(options_.row_bucket_model, hidden, intermediate));
  if (buckets.empty()) return absl::OkStatus();
  // Experts in bucket order (most rows first); each padded to its bucket's row count.
  std::vector<int32_t> order, padded_base(num_local, 0);  // padded_base[e]: expert e's first padded row
  int64_t padded_rows = 0;
  for (const ExpertRowBucket& bucket : buckets) {
    for (int32_t e : bucket.experts) {
      order.push_back(e);
      padded_base[e] = static_cast<int32_t>(padded_rows);
      padded_rows += bucket.rows;
    }
  }
  const int64_t experts = static_cast<int64_t>(order.size());
  const int64_t largest = buckets.front().rows;
  // FP8 experts are dequantized to bf16 a group at a time into a scratch of at most
  // fp8_dequantize_bytes (at least one expert), each group's GEMMs running before the next.
  const bool fp8 = options_.format == GpuExpertFormat::kFP8Block;
  const int64_t expert_elements = 3 * intermediate * hidden;
  const int64_t group =
      fp8 ? std::clamp<int64_t>(options_.fp8_dequantize_bytes / (expert_elements * 2), 1, experts) : experts;
  // The first GEMM reads its bucket's row count from each expert's first row: past the last
  // expert's rows by at most `largest` bf16 rows (largest <= rows + alignment), inside s.rows
  // (sized for float32 rows plus kBatchedRowAlignment; see RunExperts). The extra rows only feed
  // padded rows that nothing reads.
  if (s.rows.bytes() < static_cast<size_t>((offsets[num_local] + largest) * hidden * 2)) {
    return absl::InternalError("batched experts: gathered-row buffer too small for the padded reads");
  }
  EXPERTMESH_RETURN_IF_ERROR(s.batch_pointers.GrowTo(6 * experts * sizeof(void*)));
  EXPERTMESH_RETURN_IF_ERROR(s.padded_base.GrowTo(num_local * sizeof(int32_t)));
  // bf16 products (float32 accumulation inside the GEMMs): half the bytes of the float32 ones
  // that prefill would otherwise write and read back.
  EXPERTMESH_RETURN_IF_ERROR(s.padded_gate_up.GrowTo(padded_rows * 2 * intermediate * 2));
  EXPERTMESH_RETURN_IF_ERROR(s.padded_h.GrowTo(padded_rows * intermediate * 2));
  EXPERTMESH_RETURN_IF_ERROR(s.padded_y.GrowTo(padded_rows * hidden * 2));
  EXPERTMESH_RETURN_IF_ERROR(s.padded_row_of_slot.GrowTo(slots * sizeof(int32_t)));
  if (fp8) EXPERTMESH_RETURN_IF_ERROR(s.dequantized_group.GrowTo(group * expert_elements * 2));
  auto* dequantized = s.dequantized_group.as<uint16_t>();  // [group][gate_up 2I x H | down H x I]
  // Pointer arrays: gate_up GEMM (rows, weights, products), then down GEMM (h, weights, outputs).
  // FP8: expert i of a bucket uses dequantized slot (i - bucket start) % group, as the chunks of
  // `group` experts below start at the bucket's start.
  std::vector<const void*> pointers(6 * experts);
  auto* rows = static_cast<const std::byte*>(s.rows.data());
  auto* gate_up = static_cast<std::byte*>(s.padded_gate_up.data());
  auto* h = static_cast<std::byte*>(s.padded_h.data());
  auto* out = static_cast<std::byte*>(s.padded_y.data());
  int64_t bucket_start = 0;
  for (const ExpertRowBucket& bucket : buckets) {
    for (int64_t i = bucket_start; i < bucket_start + static_cast<int64_t>(bucket.experts.size()); ++i) {
      const int32_t e = order[i];
      const int64_t base = padded_base[e];
      uint16_t* own = fp8 ? dequantized + ((i - bucket_start) % group) * expert_elements : nullptr;
      pointers[i] = rows + offsets[e] * hidden * 2;
      pointers[experts + i] = fp8 ? own : layer.slots[e].gate_up.data();
      pointers[2 * experts + i] = gate_up + base * 2 * intermediate * 2;
      pointers[3 * experts + i] = h + base * intermediate * 2;
      pointers[4 * experts + i] = fp8 ? own + 2 * intermediate * hidden : layer.slots[e].down.data();
      pointers[5 * experts + i] = out + base * hidden * 2;
    }
    bucket_start += static_cast<int64_t>(bucket.experts.size());
  }
  // Pageable sources: the calls return once the bytes are staged, so the vectors may go.
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(s.batch_pointers.data(), pointers.data(),
                                                        pointers.size() * sizeof(void*), cudaMemcpyHostToDevice,
                                                        AsStream(stream)), "batch pointer upload"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(s.padded_base.data(), padded_base.data(),
                                                        padded_base.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                                                        AsStream(stream)), "padded base upload"));
  auto* const* device_pointers = s.batch_pointers.as<void*>();
  cuda::CublasContext& blas = *blas_[0];
  bucket_start = 0;
  for (const ExpertRowBucket& bucket : buckets) {
    cuda::GemmShape first;
    first.m = bucket.rows;
    first.n = 2 * intermediate;
    first.k = hidden;
    first.lda = first.ldb = hidden;
    first.ldc = 2 * intermediate;
    cuda::GemmShape second;
    second.m = bucket.rows;
    second.n = hidden;
    second.k = intermediate;
    second.lda = second.ldb = intermediate;
    second.ldc = hidden;
    const int64_t bucket_end = bucket_start + static_cast<int64_t>(bucket.experts.size());
    for (int64_t begin = bucket_start; begin < bucket_end; begin += group) {
      const int64_t count = std::min(group, bucket_end - begin);
      for (int64_t i = begin; fp8 && i < begin + count; ++i) {
        const ExpertStorage& expert = layer.slots[order[i]];
        uint16_t* own = dequantized + (i - begin) * expert_elements;
        EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchDequantizeFp8Block(expert.gate_up.as<uint8_t>(),
                                                                  expert.gate_up_scale.as<float>(), 2 * intermediate,
                                                                  hidden, intermediate, own, stream));
        EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchDequantizeFp8Block(expert.down.as<uint8_t>(),
                                                                  expert.down_scale.as<float>(), hidden, intermediate,
                                                                  hidden, own + 2 * intermediate * hidden, stream));
      }
      EXPERTMESH_RETURN_IF_ERROR(blas.GemmPointerBatch(first, device_pointers + begin, device_pointers + experts + begin,
                                                       device_pointers + 2 * experts + begin, count,
                                                       ElementType::kBF16, ElementType::kBF16, stream));
      const int64_t first_row = padded_base[order[begin]];
      EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchSiluMultiplyRows(
          static_cast<const std::byte*>(s.padded_gate_up.data()) + first_row * 2 * intermediate * 2,
          count * bucket.rows, intermediate, h + first_row * intermediate * 2, true, stream, /*from_bf16=*/true));
      EXPERTMESH_RETURN_IF_ERROR(blas.GemmPointerBatch(second, device_pointers + 3 * experts + begin,
                                                       device_pointers + 4 * experts + begin,
                                                       device_pointers + 5 * experts + begin, count,
                                                       ElementType::kBF16, ElementType::kBF16, stream));
    }
    bucket_start = bucket_end;
  }
  EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchPadRowsOfSlots(s.row_of_slot.as<int32_t>(), slots, s.offsets.as<int32_t>(),
                                                        num_local, s.padded_base.as<int32_t>(),
                                                        s.padded_row_of_slot.as<int32_t>(), stream));
  *y = s.padded_y.data();
  *row_of_slot = s.padded_row_of_slot.as<int32_t>();
  return absl::OkStatus();
}

absl::Status CudaRoutedExperts::RunCublas(const LayerStorage& layer, std::span<const int32_t> offsets, int streams,
                                          void* stream) {
  Scratch& s = *scratch_;
  const int64_t hidden = options_.hidden_size, intermediate = options_.intermediate_size;
  const bool f32 = options_.format == GpuExpertFormat::kF32;
  const bool fp8 = options_.format == GpuExpertFormat::kFP8Block;
  const ElementType ab = f32 ? ElementType::kF32 : ElementType::kBF16;
  const size_t element = f32 ? 4 : 2;
  int64_t largest = 0;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) largest = std::max<int64_t>(largest, offsets[e + 1] - offsets[e]);
  if (largest == 0) return absl::OkStatus();
  // Per stream: float32 gate|up products of the largest expert's rows; FP8 weights of one expert in bf16.
  for (int i = 0; i < streams; ++i) {
    if (blas_[i] == nullptr) {
      EXPERTMESH_ASSIGN_OR_RETURN(blas_[i], cuda::CublasContext::Create());
    }
    const size_t products = largest * 2 * intermediate * sizeof(float);
    EXPERTMESH_RETURN_IF_ERROR(s.gate_up_out[i].GrowTo(products));
    if (fp8) EXPERTMESH_RETURN_IF_ERROR(s.dequantized[i].GrowTo(3 * intermediate * hidden * 2));
  }
  void* lanes[kCublasStreams] = {stream};
  EXPERTMESH_RETURN_IF_ERROR(ForkLanes(streams, stream, lanes));
  auto* rows = static_cast<std::byte*>(s.rows.data());
  auto* h = static_cast<std::byte*>(s.h.data());
  int next = 0;
  absl::Status status;
  for (size_t e = 0; status.ok() && e + 1 < offsets.size(); ++e) {
    const int64_t first = offsets[e], count = offsets[e + 1] - offsets[e];
    if (count == 0) continue;
    const int lane = next++ % streams;
    void* lane_stream = lanes[lane];
    cuda::CublasContext& blas = *blas_[lane];
    const ExpertStorage& expert = layer.slots[e];
    const void* gate_up = expert.gate_up.data();
    const void* down = expert.down.data();
    if (fp8) {
      auto* bf16 = s.dequantized[lane].as<uint16_t>();
      status = cuda::LaunchDequantizeFp8Block(expert.gate_up.as<uint8_t>(), expert.gate_up_scale.as<float>(),
                                              2 * intermediate, hidden, intermediate, bf16, lane_stream);
      if (status.ok()) {
        status = cuda::LaunchDequantizeFp8Block(expert.down.as<uint8_t>(), expert.down_scale.as<float>(), hidden,
                                                intermediate, hidden, bf16 + 2 * intermediate * hidden, lane_stream);
      }
      gate_up = bf16;
      down = bf16 + 2 * intermediate * hidden;
    }
    if (status.ok()) {
      status = blas.Linear(rows + first * hidden * element, count, hidden, gate_up, 2 * intermediate,
                           s.gate_up_out[lane].data(), ab, ElementType::kF32, lane_stream);
    }
    if (status.ok()) {
      status = cuda::LaunchSiluMultiplyRows(s.gate_up_out[lane].as<float>(), count, intermediate,
                                            h + first * intermediate * element, !f32, lane_stream,
                                            /*from_bf16=*/false);
    }
    if (status.ok()) {
      status = blas.Linear(h + first * intermediate * element, count, intermediate, down, hidden,
                           s.y.as<float>() + first * hidden, ab, ElementType::kF32, lane_stream);
    }
  }
  // Join (also after an error, so no helper stream is left running ahead of `stream`).
  const absl::Status joined = JoinLanes(streams, stream, lanes);
  return status.ok() ? joined : status;
}

absl::Status CudaRoutedExperts::ForkLanes(int count, void* stream, void* lanes[kCublasStreams]) {
  if (fork_event_ == nullptr) {
    cudaEvent_t event = nullptr;
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate"));
    fork_event_ = event;
  }
  for (int i = 0; i < count; ++i) {
    if (i > 0 && cublas_streams_[i] == nullptr) {
      cudaStream_t created = nullptr;
      EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking), "cudaStreamCreate"));
      cublas_streams_[i] = created;
    }
    if (join_events_[i] == nullptr) {
      cudaEvent_t event = nullptr;
      EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate"));
      join_events_[i] = event;
    }
  }
  lanes[0] = stream;
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaEventRecord(static_cast<cudaEvent_t>(fork_event_), AsStream(stream)),
                                        "cudaEventRecord"));
  for (int i = 1; i < count; ++i) {
    lanes[i] = cublas_streams_[i];
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(
        cudaStreamWaitEvent(AsStream(lanes[i]), static_cast<cudaEvent_t>(fork_event_), 0), "cudaStreamWaitEvent"));
  }
  return absl::OkStatus();
}

absl::Status CudaRoutedExperts::JoinLanes(int count, void* stream, void* const lanes[kCublasStreams]) {
  absl::Status status;
  for (int i = 1; i < count; ++i) {
    absl::Status joined = CudaStatus(cudaEventRecord(static_cast<cudaEvent_t>(join_events_[i]), AsStream(lanes[i])),
                                     "cudaEventRecord");
    if (joined.ok()) {
      joined = CudaStatus(cudaStreamWaitEvent(AsStream(stream), static_cast<cudaEvent_t>(join_events_[i]), 0),
                          "cudaStreamWaitEvent");
    }
    if (status.ok()) status = joined;
  }
  return status;
}

}  // namespace expertmesh
