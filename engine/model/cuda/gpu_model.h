// GpuModel: the monolithic DeepSeek-V2/V3 forward pass on one GPU, mirroring DeepseekModel::Step
// (same semantics, same RoutedExperts seam for the routed experts). It owns the non-expert weights
// on the device, a paged latent KV cache (pages of `page_tokens` positions handed to sequences
// as they grow) and the scratch of one step. Norms, RoPE/YaRN, absorbed MLA attention, gating,
// shared experts and the LM head run on the device; the routed experts run through
// CudaRoutedExperts::ComputeOnDevice when that is the RoutedExperts given (no host round trip),
// else through RoutedExperts::ComputeAsync (pinned host buffers, one copy each way, overlapped
// with the shared experts on the GPU: the attention-svc path). GenerateGreedy runs the decode loop
// on the device, optionally as one captured CUDA graph replayed per step.
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/tensor.h"
#include "engine/format/model_config.h"
#include "engine/model/cuda/cuda_routed_experts.h"
#include "engine/model/cuda/gpu_model_weights.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/model_weights.h"
#include "engine/model/routed_experts.h"
#include "engine/ops/cuda/cublas_gemm.h"
#include "engine/ops/cuda/model_kernels.h"

namespace expertmesh {

struct GpuModelOptions {
  cuda::ElementType weight_type = cuda::ElementType::kBF16;  // kF32: the fidelity mode (no TF32)
  int64_t max_step_tokens = 2048;     // tokens of one Step (scratch size)
  int64_t max_logit_rows = 256;       // LM-head rows computed at once (more are done in chunks)
  int64_t max_sequences = 64;
  int64_t max_sequence_length = 4096;  // positions per sequence
  int64_t page_tokens = 64;
  int64_t cache_pages = 0;  // 0: enough for max_sequences of max_sequence_length
  // Steps with a multi-token sequence (prefill chunks): kNaive expands the cached latents through
  // kv_b_proj and runs per-head score and value GEMMs in float32 on cuBLAS (what the CPU engine
  // does for prefill); kAbsorbed uses the decode kernel for every token. Decode-only steps and
  // GenerateGreedy always use the absorbed kernel.
  AttentionAlgorithm prefill_attention = AttentionAlgorithm::kNaive;
  // bf16 linear layers of steps with at most this many tokens run on the skinny tensor-core
  // kernels (float32 activations rounded while loading: no conversion kernels, fused SwiGLU)
  // instead of cuBLAS. 0 (default): cuBLAS always. Measured on an H100 (bench/RESULTS.md, V2-Lite
  // widths, CUDA graph): cuBLAS's GEMV-shaped kernels won at batch 1 (1222 vs 1086 tok/s) and 8
  // (4990 vs 4462) and tied at 32 and 64, their bf16 conversion kernels included.
  int64_t decode_linear_max_rows = 0;
  // The skinny kernels stream weights through cp.async rings in shared memory (false: register
  // loads, for side-by-side benchmarks).
  bool decode_linear_weight_ring = true;
  // Decode attention of few sequences splits the cached positions over blocks (flash-decoding
  // partials and a combine kernel); false: one block per sequence and head group.
  bool split_decode_attention = true;
  // 1 or 2: see Step(inputs, step_options).
  int64_t micro_batches = 1;
};

struct GpuSequenceInput {
  int64_t sequence = -1;              // from NewSequence
  std::span<const int32_t> token_ids; // new tokens, at least one
  bool all_logits = false;            // logits for every new token, else the last one only
};

class GpuModel {
 public:
  // `routed_experts` (not owned, must outlive the model) may be null only without MoE layers.
  static absl::StatusOr<std::unique_ptr<GpuModel>> Create(const ModelConfig& config, const ModelWeights& weights,
                                                          RoutedExperts* routed_experts, const GpuModelOptions& options);
  ~GpuModel();

  const ModelConfig& config() const { return config_; }
  const GpuModelOptions& options() const { return options_; }
  void set_decode_linear_max_rows(int64_t rows) { options_.decode_linear_max_rows = rows; }
  void set_decode_linear_weight_ring(bool ring) { options_.decode_linear_weight_ring = ring; }
  uint64_t DeviceWeightBytes() const { return weights_.ByteSize(); }
  uint64_t DeviceCacheBytes() const;

  // A new empty sequence (RESOURCE_EXHAUSTED when max_sequences are live).
  absl::StatusOr<int64_t> NewSequence();
  void ReleaseSequence(int64_t sequence);
  int64_t SequenceLength(int64_t sequence) const;

  // One step over several sequences; per sequence its logits ([new tokens, vocab] if all_logits,
  // else [1, vocab]). On error no sequence changes length.
  absl::StatusOr<std::vector<Tensor>> Step(std::span<const GpuSequenceInput> inputs,
                                           const RoutingObserver* observer = nullptr);
  // The same with StepOptions: its observer, its routed experts (this step's instead of the
  // model's, e.g. the fan-out pinned to the step's weight set; always reached from the host), and
  // its expert deadline handed to a host-side RoutedExperts (remote shards fail past it).
  // micro_batches (0: GpuModelOptions::micro_batches) of 2 splits a step of several sequences whose
  // routed experts are reached from the host (the attention tier's fan-out) into two interleaved
  // micro-batches, as DeepseekModel does; with the experts on this GPU, or an observer, a step is
  // one batch. Same results either way.
  absl::StatusOr<std::vector<Tensor>> Step(std::span<const GpuSequenceInput> inputs, const StepOptions& step_options);

  // Greedy decoding of `steps` tokens for each sequence, whose next input is next_tokens[b]
  // (typically the argmax of its last logits). All on the device; with `use_cuda_graph` one step
  // is captured once and replayed (needs CudaRoutedExperts or no MoE layers). Returns the
  // generated ids per sequence; the sequences grow by `steps`.
  absl::StatusOr<std::vector<std::vector<int32_t>>> GenerateGreedy(std::span<const int64_t> sequences,
                                                                   std::span<const int32_t> next_tokens, int64_t steps,
                                                                   bool use_cuda_graph);

 private:
  struct Sequence {
    bool live = false;
    int64_t length = 0;
    std::vector<int32_t> pages;
  };
  struct Buffers {
    cuda::DeviceBuffer token_ids, token_pos, token_seq, logit_rows, block_table, first_pos, generated;
    cuda::DeviceBuffer cos, sin;
    std::vector<cuda::DeviceBuffer> cache;  // per layer: [pages, page_tokens, rank + rope] float32
    cuda::DeviceBuffer residual, normed, attention_out, mlp_out, q_latent, q_latent_normed, q, kv;
    cuda::DeviceBuffer q_absorbed, context, heads_out, gate_up, h, router_logits, expert_ids, expert_weights;
    cuda::DeviceBuffer gemm_input, final_rows, logits;
    cuda::DeviceBuffer cache_rows, kv_expanded, scores;  // naive prefill attention
    cuda::DeviceBuffer routed_out;  // host-side experts' sum, uploaded ([tokens, hidden])
    cuda::DeviceBuffer attention_split;  // partials of the decode attention split over positions
    cuda::DeviceBuffer argmax_parts;     // greedy decoding's per-slice maxima
    int64_t table_positions = 0;
  };
  // One sequence of the step being run (for the naive attention's per-sequence GEMMs).
  struct StepSequence {
    int64_t sequence = 0, first_row = 0, tokens = 0, start = 0;
  };

  GpuModel(const ModelConfig& config, GpuModelOptions options, RoutedExperts* routed_experts);
  absl::Status Initialize(const ModelWeights& weights);
  absl::Status ValidateInputs(std::span<const GpuSequenceInput> inputs) const;
  // Makes sequence `s` hold pages for `length` positions; records new pages in `added`.
  absl::Status GrowSequence(int64_t s, int64_t length, std::vector<std::pair<int64_t, int32_t>>& added);
  absl::Status UploadBlockTable();
  // Runs the layers over the `tokens` tokens already described on the device (ids, positions,
  // sequences); leaves the final residual stream in buffers' residual.
  absl::Status RunLayers(int64_t tokens, bool capturable, const RoutingObserver* observer);
  // The two ends of a step shared by RunLayers and RunMicroBatches: residual = the tokens'
  // embedding rows; residual += the last layer's mlp_out (the final norm reads residual).
  absl::Status EmbedTokens(int64_t tokens);
  absl::Status AddLastMlpToResidual(int64_t tokens);
  // The attention half of a layer for the `tokens` rows from step row `first_row` (`sequences`:
  // theirs): residual rows += the previous layer's mlp_out rows (none before layer 0), input norm,
  // Attention, residual rows += attention_out, post-attention norm into normed (from row 0).
  absl::Status AttentionBlock(int64_t layer, int64_t first_row, int64_t tokens,
                              std::span<const StepSequence> sequences);
  // Attention of the `tokens` rows from step row `first_row` (`sequences`: theirs, first_row
  // relative to the step); reads normed and writes attention_out from row 0.
  absl::Status Attention(int64_t layer, int64_t first_row, int64_t tokens, std::span<const StepSequence> sequences);
  // Naive attention of one sequence: context rows go straight into heads_out.
  absl::Status NaiveAttention(const DeviceLayer& w, const cuda::PagedCacheView& cache, const StepSequence& sequence);
  absl::Status Mlp(int64_t layer, int64_t tokens, bool capturable, const RoutingObserver* observer);
  // Router logits and the gate's choice (expert_ids, expert_weights) for normed's `tokens` rows.
  absl::Status Gate(int64_t layer, int64_t tokens);
  // The routed experts through a host-side RoutedExperts (remote shards): activations, ids and
  // gate weights to pinned host memory, ComputeAsync, the shared experts on the GPU meanwhile,
  // then the experts' sum back and added to mlp_out.
  absl::Status HostExperts(int64_t layer, int64_t tokens);
  // Its two halves for the `tokens` rows from step row `first_row` of a step of `step_tokens`:
  // Start downloads normed and the routing (one stream synchronisation), starts ComputeAsync and
  // queues the shared experts into those rows of mlp_out; Finish waits for the experts (always
  // call it for a started round trip), uploads their sum and adds it to mlp_out.
  absl::StatusOr<std::future<absl::Status>> StartHostExperts(int64_t layer, int64_t step_tokens, int64_t first_row,
                                                             int64_t tokens);
  absl::Status FinishHostExperts(int64_t layer, std::future<absl::Status>& routed, int64_t step_tokens,
                                 int64_t first_row, int64_t tokens);
  absl::Status EnsureHostStaging(int64_t tokens);
  // Pinned staging of a step of `step_tokens` (x and out [t, hidden], ids and weights [t, top_k]),
  // each at row `first_row`.
  struct HostRows {
    float* x;
    float* out;
    int32_t* ids;
    float* weights;
  };
  HostRows StagingRows(int64_t step_tokens, int64_t first_row) const;
  // Micro-batches (StepOptions::micro_batches = 2, host-side experts): the step's sequences in two
  // halves of about equal token counts whose layers interleave, so one half's expert round trip
  // overlaps the other's attention. residual and mlp_out hold each half's own rows; the other
  // buffers are scratch reused by whichever half runs (one stream orders them).
  struct MicroBatch {
    int64_t first_row = 0, tokens = 0;
    std::vector<StepSequence> sequences;
    int64_t moe_layer = -1;  // the layer whose routed experts are in flight, -1: none
    std::future<absl::Status> routed;
  };
  // The step's sequences (two or more) in two halves.
  std::vector<MicroBatch> SplitInTwoMicroBatches() const;
  absl::Status RunMicroBatches(int64_t tokens, std::vector<MicroBatch>& batches);
  absl::Status BeginMicroBatchLayer(int64_t layer, MicroBatch& batch, int64_t step_tokens);
  absl::Status FinishMicroBatchMoe(MicroBatch& batch, int64_t step_tokens);
  absl::Status SwiGlu(const DeviceMlp& mlp, const float* x, int64_t tokens, float* out, bool accumulate);
  // y[rows, W.rows] = x[rows, W.cols] * W^T (+ y); converts x to W's element type when needed.
  absl::Status Linear(const float* x, int64_t rows, const DeviceMatrix& w, float* y, bool accumulate = false);
  bool UsesDecodeLinear(const DeviceMatrix& w, int64_t rows) const;
  // x in `type` for a GEMM: x itself (float32) or its bf16 copy in gemm_input, reused while the
  // same x is asked for again until InvalidateGemmInput() (called wherever x's contents change).
  const void* AsGemmInput(const float* x, int64_t count, cuda::ElementType type);
  void InvalidateGemmInput() { converted_source_ = nullptr; }
  // residual (+= delta), then out = RMSNorm(residual rows) * weight (cuda::LaunchAddRmsNorm). With
  // bf16 weights the kernel also writes out's bf16 copy into gemm_input and AsGemmInput(out) then
  // reuses it; otherwise the cached conversion is dropped (out has new contents).
  absl::Status NormRows(float* residual, const float* delta, const int32_t* source_rows, const float* weight,
                        int64_t rows, int64_t cols, float eps, float* out);

  ModelConfig config_;
  GpuModelOptions options_;
  RoutedExperts* routed_experts_;
  CudaRoutedExperts* cuda_experts_ = nullptr;  // routed_experts_ when it lives on this GPU
  bool has_moe_layers_ = false;
  GpuModelWeights weights_;
  std::unique_ptr<cuda::CublasContext> blas_;
  std::unique_ptr<Buffers> buffers_;
  void* stream_ = nullptr;  // cudaStream_t
  int device_ = 0;          // the device current at Create; made current by every public call
  // Page-locked host staging of HostExperts: x [t, hidden], out [t, hidden], ids and weights [t, k].
  void* host_staging_ = nullptr;
  size_t host_staging_bytes_ = 0;
  std::chrono::steady_clock::time_point expert_deadline_ = std::chrono::steady_clock::time_point::max();
  RoutedExperts* step_experts_ = nullptr;  // StepOptions::routed_experts of the step being run
  int64_t step_micro_batches_ = 0;          // StepOptions::micro_batches of the step being run
  float softmax_scale_ = 1.0f;
  int64_t max_pages_per_sequence_ = 0;
  std::vector<Sequence> sequences_;
  std::vector<int32_t> free_pages_;
  std::vector<int32_t> block_table_;  // [max_sequences, max_pages_per_sequence], -1 = none
  std::vector<StepSequence> step_sequences_;  // of the Step being run; empty in GenerateGreedy
  bool naive_step_ = false;
  const float* converted_source_ = nullptr;  // what gemm_input holds in bf16
  int64_t converted_count_ = 0;
};

}  // namespace expertmesh
