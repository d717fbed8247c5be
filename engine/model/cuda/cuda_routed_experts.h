// CudaRoutedExperts: RoutedExperts on one GPU — what expert-svc runs on its card. Owns the
// device-resident weights of a shard's routed experts (bf16, FP8 E4M3 with 128x128 block scales
// served without expanding the shard, or float32 for bit-faithful comparisons) and the scratch
// of one batch. A batch is permuted by expert on the device, each expert's SwiGLU runs over its
// rows (tensor-core kernels while rows per expert are few and weight bytes dominate, cuBLAS GEMMs
// above that), and the weighted outputs are combined into one row per token. One GPU per shard:
// the object lives on the device current at Create and makes it current in every call (the
// runtime's current device is per thread, and gRPC handlers run on any thread).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/dtype.h"
#include "engine/model/expert_row_buckets.h"
#include "engine/model/model_weights.h"
#include "engine/model/routed_experts.h"
#include "engine/ops/cuda/cublas_gemm.h"
#include "engine/ops/cuda/cuda_device.h"
#include "engine/ops/cuda/fp8_block_gemm.h"

namespace expertmesh {

enum class GpuExpertFormat { kF32, kBF16, kFP8Block };

// How the experts' matrix products run (kAuto picks by batch size; the others are for benchmarks
// and tests): the tensor-core kernels, one cuBLAS GEMM chain per expert on one stream,
// the same spread over kCublasStreams concurrent streams (small experts fill the GPU together),
// or two pointer-batched cuBLAS GEMMs per bucket of experts with similar row counts, padded to the
// bucket's largest (bf16 products; FP8 experts dequantized a group at a time; float32 experts take
// kCublasStreams instead), the few-token kernels (batches of at most cuda::kFewTokenMaxTokens
// tokens, bf16 or FP8: two launches that stream each chosen expert's rows once, no permutation),
// or, for FP8 experts, W8A8 products: rows and SwiGLU outputs rounded to E4M3 per 128 values (as
// DeepSeek-V3's inference does) and per-expert block-scaled FP8 cuBLASLt GEMMs over
// kCublasStreams streams (hidden and intermediate sizes in multiples of 512).
enum class ExpertGemmPath { kAuto, kDirect, kCublasLoop, kCublasStreams, kCublasBatched, kFewTokens, kCublasFp8 };
inline constexpr int kCublasStreams = 4;
// kCublasBatched: bucket row counts are multiples of this (repeating GEMM shapes; see
// PlanExpertRowBuckets).
inline constexpr int64_t kBatchedRowAlignment = 16;

struct CudaExpertOptions {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // moe_intermediate_size
  int64_t n_routed_experts = 0;   // global expert ids are in [0, n_routed_experts)
  GpuExpertFormat format = GpuExpertFormat::kBF16;
  ExpertGemmPath path = ExpertGemmPath::kAuto;
  // kAuto for FP8 experts (and bf16 without batched_cublas): the tensor-core kernels while no
  // expert gets more rows than this, cuBLAS above (kCublasBatched, or kCublasStreams without
  // batched_cublas).
  int64_t max_rows_for_direct_kernels = 64;
  // kAuto for bf16 experts outside CUDA graphs: the tensor-core kernels for batches of at most
  // this many tokens, kCublasBatched above. Measured on an H100 (bench/RESULTS.md): the kernels
  // read V2-Lite / V3 experts at 46% / 45% of copy bandwidth at 1 token (the padded cuBLAS batch
  // 33% / 44%), the batch 62-78% / 66-87% from 4 to 256 tokens (the kernels 56-62% / 53-66%).
  int64_t max_tokens_for_direct_kernels = 1;
  // kAuto and CUDA graphs, bf16 and FP8 experts: the few-token kernels for batches of at most this
  // many tokens (0 = never; at most cuda::kFewTokenMaxTokens). Measured on an H100
  // (bench/RESULTS.md, run 6): V3 bf16 71/67/85% of copy bandwidth at 1/2/4 tokens (tensor-core
  // kernels 46/48/66%), V3 FP8 61/55/77% (31/34/50%), V2-Lite 67/71/63% (44/54/57%; a tie with
  // the tensor-core kernels at 4 tokens).
  int64_t few_token_max_tokens = 4;
  // Few-token kernels: the down kernel is a programmatic dependent launch (starts while gate/up
  // finishes). false: plain stream order, kept for side-by-side benchmarks.
  bool programmatic_launch = true;
  // Few-token kernels: warps sharing each output row (cuda::FewTokenExpertBatch::warps_per_row;
  // 0 = two warps per row where the rows are at most half the grid's warps). Measured on an H100
  // (bench/RESULTS.md, run 8): V2-Lite bf16 at 1/2/4 tokens 62/62/59% of copy bandwidth with one
  // warp per row, 67/71/71% with 0; V3 (more rows than half the warps) unchanged.
  int few_token_warps_per_row = 0;
  bool batched_cublas = true;
  // kCublasBatched: experts bucketed by row count (PlanExpertRowBuckets with
  // CostsOfExpertRows(row_bucket_model, ...)), one pointer batch per bucket padded to that bucket's
  // rows instead of one padded to the hottest expert's; at most this many buckets (1: the single
  // padded batch, kept for side-by-side benchmarks). On an H100 (bench/RESULTS.md, run 14), against
  // the quarter rule it replaced: V2-Lite 256 / 4096 / 16384 tokens 0.467 / 0.953 / 3.449 ms vs
  // 0.483 / 0.952 / 3.608, V3 bf16 1.019 / 1.256 / 2.788 vs 1.016 / 1.263 / 2.849.
  int batched_row_buckets = 4;
  RowBucketModel row_bucket_model{};
  // kCublasBatched with FP8 experts: device scratch for the dequantized bf16 copies of a group of
  // experts (at least one expert's worth is used whatever this says).
  int64_t fp8_dequantize_bytes = int64_t(1) << 30;
  // kAuto with FP8 experts outside CUDA graphs, from fp8_products_min_tokens tokens or above
  // max_rows_for_direct_kernels rows: kCublasFp8 (activations rounded to E4M3 per 128 values, as
  // DeepSeek-V3's own inference and training forward pass do) where cuBLASLt passes its
  // known-values check and the sizes allow; false: the tensor-core kernels up to
  // max_rows_for_direct_kernels rows, weights dequantized to bf16 above (kCublasBatched),
  // activations kept in bf16. On: on an H100 (run 7, bench/RESULTS.md) the W8A8 products match
  // their emulation to 3-5e-3 and run V3 prefill (4096 tokens) at 312 TFLOP/s against 115 for the
  // dequantizing path; the rounding costs ~4% relative error against float32 activations (bf16
  // activations: ~0.3%).
  bool fp8_activations = true;
  // See fp8_activations. Measured on an H100 (V3 shard of 32 experts, % of copy bandwidth, W8A8 vs
  // the tensor-core kernels): run 15, 47 vs 51% at 16 tokens, 49 vs 55% at 64, 62 vs 56% at 128,
  // 64 vs 44% at 256; run 14, 44 vs 48% at 16, 46 vs 55% at 64, 47 vs 44% at 256; run 8, 57 vs
  // 53% at 16, 65 vs 44% at 256. At 256 tokens rows per expert stay below
  // max_rows_for_direct_kernels, so without this the kernels would run there.
  int64_t fp8_products_min_tokens = 256;
  // Tensor-core path: launch blocks only for experts that got rows (a device-side list from the
  // permutation) and size each block's split-k so the grid has about 16 warps per SM. false: the
  // phase-1 grid (every local expert, 8-way split-k), kept for side-by-side benchmarks.
  bool compact_expert_grid = true;
  // Tensor-core path: weights stream through per-warp cp.async rings in shared memory (false:
  // register loads, kept for side-by-side benchmarks).
  bool weight_ring = true;
};

// The stored bytes of one expert's three tensors (zero-copy views of a checkpoint). FP8 tensors
// come with their float32 `*_scale_inv` block scales ([ceil(rows/128), ceil(cols/128)]).
struct ExpertTensorBytes {
  DType dtype = DType::kBF16;
  std::span<const std::byte> gate, up, down;
  std::span<const std::byte> gate_scale, up_scale, down_scale;
};

// A batch whose tensors already live on the device (the monolithic GPU model's path).
struct DeviceExpertBatch {
  int64_t layer = 0;
  int64_t num_tokens = 0;
  int64_t top_k = 0;
  const float* activations = nullptr;  // [num_tokens, hidden]
  const int32_t* expert_ids = nullptr; // [num_tokens, top_k], -1 = empty slot
  const float* gate_weights = nullptr; // [num_tokens, top_k]
  float* output = nullptr;             // [num_tokens, hidden]
  bool accumulate = false;             // output += ... instead of output = ...
  bool capturable = false;             // tensor-core path whatever the size (no host sync)
};

class CudaRoutedExperts final : public RoutedExperts {
 public:
  static absl::StatusOr<std::unique_ptr<CudaRoutedExperts>> Create(const CudaExpertOptions& options);
  ~CudaRoutedExperts() override;

  // Adds or replaces expert `expert` of `layer` from float32 tensors ([I,H], [I,H], [H,I]),
  // converted to the format (kFP8Block needs SetExpertFromBytes with FP8 bytes).
  absl::Status SetExpert(int64_t layer, int32_t expert, const MlpWeights& weights);
  // Same from stored bytes: bf16/f32 into kBF16 or kF32 (converted on the way), FP8 into kFP8Block
  // as is or into kBF16 dequantized. Sizes are checked against the options (INVALID_ARGUMENT);
  // NaN/inf values and FP8 block scales not finite and >= 0 are DATA_LOSS, and nothing is uploaded.
  absl::Status SetExpertFromBytes(int64_t layer, int32_t expert, const ExpertTensorBytes& bytes);

  // Device storage of an expert (created, uninitialised, if new): for in-place writers such as
  // the blend kernels and device-side random fills. Valid until the object is destroyed.
  struct DeviceWeights {
    void* gate_up = nullptr;  // [2I, H] in the format
    void* down = nullptr;     // [H, I]
    float* gate_up_scale = nullptr;  // FP8 only
    float* down_scale = nullptr;
    size_t gate_up_bytes = 0, down_bytes = 0, gate_up_scale_bytes = 0, down_scale_bytes = 0;
  };
  absl::StatusOr<DeviceWeights> MutableDeviceWeights(int64_t layer, int32_t expert);

  bool HasExpert(int64_t layer, int32_t expert) const;
  int64_t num_experts() const;
  uint64_t DeviceWeightBytes() const;  // bytes of expert weights (and scales) on the device
  const CudaExpertOptions& options() const { return options_; }
  void set_path(ExpertGemmPath path) { options_.path = path; }
  void set_compact_expert_grid(bool compact) { options_.compact_expert_grid = compact; }
  void set_weight_ring(bool ring) { options_.weight_ring = ring; }
  void set_batched_cublas(bool batched) { options_.batched_cublas = batched; }
  void set_batched_row_buckets(int buckets) { options_.batched_row_buckets = std::max(buckets, 1); }
  void set_row_bucket_model(const RowBucketModel& model) { options_.row_bucket_model = model; }
  void set_fp8_dequantize_bytes(int64_t bytes) { options_.fp8_dequantize_bytes = bytes; }
  void set_few_token_max_tokens(int64_t tokens) { options_.few_token_max_tokens = tokens; }
  void set_programmatic_launch(bool programmatic) { options_.programmatic_launch = programmatic; }
  void set_few_token_warps_per_row(int warps) { options_.few_token_warps_per_row = warps; }
  void set_fp8_activations(bool fp8_activations) { options_.fp8_activations = fp8_activations; }
  void set_fp8_products_min_tokens(int64_t tokens) { options_.fp8_products_min_tokens = tokens; }
  // OK when kCublasFp8 can run here (FP8 experts, sizes, cuBLASLt's known-values check; made on
  // first use), else why not.
  absl::Status Fp8ProductsAvailable();

  // Host API (RoutedExperts): copies the batch to the device, computes, adds the result to
  // `output`. NOT_FOUND for experts not held, INVALID_ARGUMENT for bad sizes or gate weights.
  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override;

  // Device API, enqueued on `stream` (cudaStream_t). Ids naming experts not held are dropped and
  // recorded; DeviceErrors() reports them. Capturable in a CUDA graph with batch.capturable set
  // (the few-token or tensor-core kernels whatever the size; not for float32 experts) after
  // Reserve(num_tokens, top_k).
  absl::Status ComputeOnDevice(const DeviceExpertBatch& batch, void* stream);
  // Sizes the scratch for batches of up to `tokens` tokens (so graph capture allocates nothing).
  absl::Status Reserve(int64_t tokens, int64_t top_k);
  // Synchronises `stream`; NOT_FOUND if a device batch since the last call named an expert not held.
  absl::Status DeviceErrors(void* stream);

 private:
  struct ExpertStorage {
    cuda::DeviceBuffer gate_up;  // [2I, H] in the format (gate rows, then up rows)
    cuda::DeviceBuffer down;     // [H, I]
    cuda::DeviceBuffer gate_up_scale;  // FP8: [2 * ceil(I/128), ceil(H/128)] float32
    cuda::DeviceBuffer down_scale;     // FP8: [ceil(H/128), ceil(I/128)] float32
  };
  struct LayerStorage {
    std::vector<int32_t> slot_of_expert;  // [n_routed_experts], -1 = not held
    std::vector<ExpertStorage> slots;
    cuda::DeviceBuffer device_slot_of_expert;
    cuda::DeviceBuffer device_pointers;  // gate_up[S], down[S], gate_up_scale[S], down_scale[S]
  };
  struct Scratch {
    int64_t slot_capacity = 0;  // tokens * top_k
    int64_t token_capacity = 0;
    int64_t row_capacity = 0;
    cuda::DeviceBuffer activations, output, ids, weights;  // host API staging
    cuda::DeviceBuffer offsets, row_token, row_of_slot, error, active;
    cuda::DeviceBuffer permutation_work;  // per-block counts (cuda::ExpertPermutationWorkInts)
    cuda::DeviceBuffer rows, h, y;
    cuda::DeviceBuffer gate_up_out[kCublasStreams], dequantized[kCublasStreams];  // per cuBLAS stream
    // kCublasBatched: operand pointer arrays, padded [experts, rows, *] products, slot -> padded row.
    cuda::DeviceBuffer batch_pointers, padded_base, padded_gate_up, padded_h, padded_y, padded_row_of_slot;
    cuda::DeviceBuffer dequantized_group;  // FP8: bf16 copies of a group of experts
    // kCublasFp8: padded-row table and offsets, E4M3 rows and SwiGLU outputs with their scales.
    cuda::DeviceBuffer fp8_table, fp8_padded_offsets, fp8_rows, fp8_row_scales, fp8_h, fp8_h_scales;
    // Page-locked host staging of the host API (activations, ids, gate weights, output), so the
    // copies are real asynchronous DMA and one synchronisation ends a batch.
    void* pinned = nullptr;
    size_t pinned_bytes = 0;
    ~Scratch();
  };

  explicit CudaRoutedExperts(const CudaExpertOptions& options);
  absl::StatusOr<ExpertStorage*> SlotFor(int64_t layer, int32_t expert);
  absl::Status UploadTables(LayerStorage& layer);
  absl::Status UploadTensor(std::span<const std::byte> bytes, DType dtype, int64_t rows, int64_t cols,
                            std::span<const std::byte> scale, void* destination, void* stream);
  absl::Status EnsureScratch(int64_t tokens, int64_t top_k, int64_t local_rows);
  absl::Status RunExperts(const LayerStorage& layer, const DeviceExpertBatch& batch, void* stream);
  // The few-token kernels over the whole batch (no permutation, gather or combine).
  absl::Status RunFewTokens(const LayerStorage& layer, const DeviceExpertBatch& batch, void* stream);
  // One GEMM chain per expert with rows, round-robin over `streams` streams forked from `stream`.
  absl::Status RunCublas(const LayerStorage& layer, std::span<const int32_t> offsets, int streams, void* stream);
  // kCublasBatched: the padded pointer batch; sets *y (bf16 rows) and *row_of_slot to what the
  // combine reads.
  absl::Status RunCublasBatched(const LayerStorage& layer, std::span<const int32_t> offsets, int64_t slots,
                                const void** y, const int32_t** row_of_slot, void* stream);
  // kCublasFp8 (same outputs as RunCublasBatched: padded bf16 rows and the slot map).
  absl::Status RunCublasFp8(const LayerStorage& layer, const DeviceExpertBatch& batch, std::span<const int32_t> offsets,
                            const void** y, const int32_t** row_of_slot, void* stream);
  absl::Status Fp8ProductsAvailableLocked();  // Fp8ProductsAvailable with mutex_ held
  // Helper streams 1..count-1 start after the work enqueued on `stream` so far (lanes[0] = stream);
  // JoinLanes makes `stream` wait for them (returns the first error, joining all the same).
  absl::Status ForkLanes(int count, void* stream, void* lanes[kCublasStreams]);
  absl::Status JoinLanes(int count, void* stream, void* const lanes[kCublasStreams]);

  CudaExpertOptions options_;
  std::map<int64_t, LayerStorage> layers_;
  std::unique_ptr<cuda::CublasContext> blas_[kCublasStreams];  // one per stream (own workspace)
  void* cublas_streams_[kCublasStreams] = {};                   // cudaStream_t, made on first use
  void* fork_event_ = nullptr;                                  // cudaEvent_t
  void* join_events_[kCublasStreams] = {};
  std::unique_ptr<Scratch> scratch_;
  std::unique_ptr<cuda::Fp8BlockGemm> fp8_gemm_;  // kCublasFp8, made on first use
  absl::Status fp8_gemm_status_ = absl::UnknownError("not tried");
  void* stream_ = nullptr;  // cudaStream_t of the host API
  int device_ = 0;          // the CUDA device current at Create (made current again by every call)
  int sm_count_ = 132;      // its multiprocessors (sizes the tensor-core grids)
  std::mutex mutex_;        // one batch at a time (shared scratch)
};

}  // namespace expertmesh
