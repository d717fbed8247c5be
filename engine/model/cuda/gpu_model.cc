// GpuModel: creation (weights, RoPE tables, paged cache, scratch), sequences and pages, Step
// (inputs to the device, layers, LM head in chunks, logits back) and the greedy decode loop.
#include "engine/model/cuda/gpu_model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/model/mla_attention.h"
#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/decode_linear.h"
#include "engine/ops/cuda/model_kernels.h"
#include "engine/ops/rope.h"

namespace expertmesh {
namespace {

using cuda::CudaStatus;
using cuda::DeviceBuffer;

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

absl::Status Allocate(DeviceBuffer& buffer, int64_t bytes) {
  EXPERTMESH_ASSIGN_OR_RETURN(buffer, DeviceBuffer::Allocate(static_cast<size_t>(std::max<int64_t>(bytes, 16))));
  return absl::OkStatus();
}

}  // namespace

GpuModel::GpuModel(const ModelConfig& config, GpuModelOptions options, RoutedExperts* routed_experts)
    : config_(config), options_(options), routed_experts_(routed_experts) {}

GpuModel::~GpuModel() {
  if (stream_ != nullptr) cudaStreamDestroy(AsStream(stream_));
  if (host_staging_ != nullptr) cudaFreeHost(host_staging_);
}

absl::StatusOr<std::unique_ptr<GpuModel>> GpuModel::Create(const ModelConfig& config, const ModelWeights& weights,
                                                           RoutedExperts* routed_experts,
                                                           const GpuModelOptions& options) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateConfigForModel(config));
  bool has_moe = false;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) has_moe |= config.IsMoeLayer(layer);
  if (has_moe && routed_experts == nullptr) {
    return absl::InvalidArgumentError("model has MoE layers but no RoutedExperts was given");
  }
  if (config.kv_lora_rank > 512 || config.qk_rope_head_dim > 64 || config.n_routed_experts > 256 ||
      config.num_experts_per_tok > 16 || config.hidden_size % 8 != 0) {
    return absl::InvalidArgumentError(
        "GpuModel supports kv_lora_rank <= 512, rope dim <= 64, <= 256 routed experts, top-k <= 16, hidden % 8 == 0");
  }
  if (options.max_step_tokens <= 0 || options.max_sequences <= 0 || options.max_sequence_length <= 0 ||
      options.page_tokens <= 0 || options.max_logit_rows <= 0) {
    return absl::InvalidArgumentError("GpuModelOptions: sizes must be positive");
  }
  if (options.micro_batches != 1 && options.micro_batches != 2) {
    return absl::InvalidArgumentError("GpuModelOptions: micro_batches must be 1 or 2");
  }
  EXPERTMESH_RETURN_IF_ERROR(cuda::CheckDeviceAvailable());
  EXPERTMESH_RETURN_IF_ERROR(cuda::PrepareDecodeLinearKernels());  // before any graph capture
  std::unique_ptr<GpuModel> model(new GpuModel(config, options, routed_experts));
  model->device_ = cuda::CurrentDevice();
  model->cuda_experts_ = dynamic_cast<CudaRoutedExperts*>(routed_experts);
  model->has_moe_layers_ = has_moe;
  EXPERTMESH_RETURN_IF_ERROR(model->Initialize(weights));
  return model;
}

absl::Status GpuModel::Initialize(const ModelWeights& weights) {
  EXPERTMESH_ASSIGN_OR_RETURN(weights_, UploadModelWeights(config_, weights, options_.weight_type));
  EXPERTMESH_ASSIGN_OR_RETURN(blas_, cuda::CublasContext::Create());
  cudaStream_t stream = nullptr;
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  stream_ = stream;
  softmax_scale_ = static_cast<float>(MlaSoftmaxScale(config_));
  buffers_ = std::make_unique<Buffers>();
  Buffers& b = *buffers_;

  // RoPE/YaRN cos and sin (times the attention factor) for every position a sequence may reach.
  EXPERTMESH_ASSIGN_OR_RETURN(ops::RotaryEmbedding rope, ops::RotaryEmbedding::Create(MlaRopeParameters(config_)));
  const int64_t half = config_.qk_rope_head_dim / 2;
  b.table_positions = options_.max_sequence_length;
  std::vector<float> cos(b.table_positions * half), sin(b.table_positions * half);
  for (int64_t p = 0; p < b.table_positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      cos[p * half + i] = rope.Cos(p, i);
      sin[p * half + i] = rope.Sin(p, i);
    }
  }
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.cos, cos.size() * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.sin, sin.size() * 4));
  EXPERTMESH_RETURN_IF_ERROR(b.cos.CopyFromHost(cos.data(), cos.size() * 4));
  EXPERTMESH_RETURN_IF_ERROR(b.sin.CopyFromHost(sin.data(), sin.size() * 4));

  // Paged latent cache and the block table.
  max_pages_per_sequence_ = (options_.max_sequence_length + options_.page_tokens - 1) / options_.page_tokens;
  const int64_t pages =
      options_.cache_pages > 0 ? options_.cache_pages : options_.max_sequences * max_pages_per_sequence_;
  const int64_t row = config_.kv_lora_rank + config_.qk_rope_head_dim;
  b.cache.resize(config_.num_hidden_layers);
  for (DeviceBuffer& layer : b.cache) EXPERTMESH_RETURN_IF_ERROR(Allocate(layer, pages * options_.page_tokens * row * 4));
  for (int64_t p = pages - 1; p >= 0; --p) free_pages_.push_back(static_cast<int32_t>(p));
  sequences_.resize(options_.max_sequences);
  block_table_.assign(options_.max_sequences * max_pages_per_sequence_, 0);
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.block_table, block_table_.size() * 4));
  EXPERTMESH_RETURN_IF_ERROR(UploadBlockTable());

  // Step scratch.
  const int64_t t = options_.max_step_tokens;
  const int64_t hidden = config_.hidden_size, heads = config_.num_attention_heads;
  const int64_t q_rank = config_.q_lora_rank.value_or(0), rank = config_.kv_lora_rank;
  int64_t widest_mlp = config_.intermediate_size;
  widest_mlp = std::max(widest_mlp, config_.moe_intermediate_size * std::max<int64_t>(config_.n_shared_experts, 1));
  const int64_t widest_input = std::max({hidden, q_rank, widest_mlp, heads * config_.v_head_dim,
                                         heads * config_.qk_head_dim(), heads * rank});
  for (DeviceBuffer* buffer : {&b.token_ids, &b.token_pos, &b.token_seq, &b.logit_rows}) {
    EXPERTMESH_RETURN_IF_ERROR(Allocate(*buffer, t * 4));
  }
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.first_pos, options_.max_sequences * 4));
  for (DeviceBuffer* buffer : {&b.residual, &b.normed, &b.attention_out, &b.mlp_out}) {
    EXPERTMESH_RETURN_IF_ERROR(Allocate(*buffer, t * hidden * 4));
  }
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.q_latent, t * q_rank * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.q_latent_normed, t * q_rank * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.q, t * heads * config_.qk_head_dim() * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.kv, t * row * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.q_absorbed, t * heads * rank * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.context, t * heads * rank * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.heads_out, t * heads * config_.v_head_dim * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.gate_up, t * 2 * widest_mlp * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.h, t * widest_mlp * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.router_logits, t * std::max<int64_t>(config_.n_routed_experts, 1) * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.expert_ids, t * std::max<int64_t>(config_.num_experts_per_tok, 1) * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.expert_weights, t * std::max<int64_t>(config_.num_experts_per_tok, 1) * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.gemm_input, std::max(std::max(t, options_.max_logit_rows) * widest_input,
                                                              options_.max_sequence_length * row) * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.cache_rows, options_.max_sequence_length * row * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.kv_expanded, options_.max_sequence_length * heads *
                                                         (config_.qk_nope_head_dim + config_.v_head_dim) * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.final_rows, options_.max_logit_rows * hidden * 4));
  // The decode attention's split partials: at most 8 heads x the SMs' worth of (rank + 2) floats
  // (cuda::LaunchMlaAttention); sized for up to 256 SMs.
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.attention_split, int64_t(8) * 256 * (config_.kv_lora_rank + 2) * 4));
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.argmax_parts, options_.max_logit_rows * 64 * 8));
  if (cuda_experts_ == nullptr && routed_experts_ != nullptr) {
    EXPERTMESH_RETURN_IF_ERROR(Allocate(b.routed_out, t * hidden * 4));
  }
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.logits, options_.max_logit_rows * config_.vocab_size * 4));
  if (cuda_experts_ != nullptr) {
    EXPERTMESH_RETURN_IF_ERROR(cuda_experts_->Reserve(std::min<int64_t>(t, 256), config_.num_experts_per_tok));
  }
  return cuda::Synchronize();
}

uint64_t GpuModel::DeviceCacheBytes() const {
  uint64_t bytes = 0;
  for (const DeviceBuffer& layer : buffers_->cache) bytes += layer.bytes();
  return bytes;
}

absl::StatusOr<int64_t> GpuModel::NewSequence() {
  for (size_t s = 0; s < sequences_.size(); ++s) {
    if (!sequences_[s].live) {
      sequences_[s] = Sequence{true, 0, {}};
      return static_cast<int64_t>(s);
    }
  }
  return absl::ResourceExhaustedError(absl::StrCat("all ", sequences_.size(), " GPU sequences are in use"));
}

void GpuModel::ReleaseSequence(int64_t sequence) {
  if (sequence < 0 || sequence >= static_cast<int64_t>(sequences_.size()) || !sequences_[sequence].live) return;
  for (int32_t page : sequences_[sequence].pages) free_pages_.push_back(page);
  sequences_[sequence] = Sequence{};
}

int64_t GpuModel::SequenceLength(int64_t sequence) const {
  if (sequence < 0 || sequence >= static_cast<int64_t>(sequences_.size()) || !sequences_[sequence].live) return -1;
  return sequences_[sequence].length;
}

absl::Status GpuModel::GrowSequence(int64_t s, int64_t length, std::vector<std::pair<int64_t, int32_t>>& added) {
  if (length > options_.max_sequence_length) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", s, " would reach ", length,
                                                   " positions; the GPU model holds ", options_.max_sequence_length));
  }
  Sequence& sequence = sequences_[s];
  while (static_cast<int64_t>(sequence.pages.size()) * options_.page_tokens < length) {
    if (free_pages_.empty()) return absl::ResourceExhaustedError("GPU KV cache is full");
    const int32_t page = free_pages_.back();
    free_pages_.pop_back();
    block_table_[s * max_pages_per_sequence_ + sequence.pages.size()] = page;
    sequence.pages.push_back(page);
    added.emplace_back(s, page);
  }
  return absl::OkStatus();
}

absl::Status GpuModel::UploadBlockTable() {
  return CudaStatus(cudaMemcpyAsync(buffers_->block_table.data(), block_table_.data(), block_table_.size() * 4,
                                    cudaMemcpyHostToDevice, AsStream(stream_)),
                    "block table upload");
}

absl::Status GpuModel::ValidateInputs(std::span<const GpuSequenceInput> inputs) const {
  if (inputs.empty()) return absl::InvalidArgumentError("step has no sequences");
  std::set<int64_t> seen;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const GpuSequenceInput& in = inputs[i];
    if (in.sequence < 0 || in.sequence >= static_cast<int64_t>(sequences_.size()) || !sequences_[in.sequence].live) {
      return absl::InvalidArgumentError(absl::StrCat("input ", i, ": no live GPU sequence ", in.sequence));
    }
    if (!seen.insert(in.sequence).second) {
      return absl::InvalidArgumentError(absl::StrCat("input ", i, ": sequence ", in.sequence, " appears twice"));
    }
    if (in.token_ids.empty()) return absl::InvalidArgumentError(absl::StrCat("input ", i, " has no new tokens"));
    for (int32_t id : in.token_ids) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("input ", i, ": token id ", id, " outside [0, ",
                                                       config_.vocab_size, ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Tensor>> GpuModel::Step(std::span<const GpuSequenceInput> inputs,
                                                   const StepOptions& step_options) {
  expert_deadline_ = step_options.expert_deadline;
  // Experts other than the model's own take the host path (the model's may live on the device).
  step_experts_ = step_options.routed_experts != routed_experts_ ? step_options.routed_experts : nullptr;
  step_micro_batches_ = step_options.micro_batches;
  absl::StatusOr<std::vector<Tensor>> logits = Step(inputs, step_options.observer);
  expert_deadline_ = std::chrono::steady_clock::time_point::max();
  step_experts_ = nullptr;
  step_micro_batches_ = 0;
  return logits;
}

absl::StatusOr<std::vector<Tensor>> GpuModel::Step(std::span<const GpuSequenceInput> inputs,
                                                   const RoutingObserver* observer) {
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  EXPERTMESH_RETURN_IF_ERROR(ValidateInputs(inputs));
  const int64_t micro_batches = step_micro_batches_ > 0 ? step_micro_batches_ : options_.micro_batches;
  if (micro_batches != 1 && micro_batches != 2) {
    return absl::InvalidArgumentError(absl::StrCat("micro_batches must be 1 or 2 (got ", micro_batches, ")"));
  }
  std::vector<int32_t> ids, positions, owners, logit_rows;
  std::vector<Tensor> logits;
  step_sequences_.clear();
  naive_step_ = false;
  for (const GpuSequenceInput& in : inputs) {
    const int64_t start = sequences_[in.sequence].length;
    const auto count = static_cast<int64_t>(in.token_ids.size());
    step_sequences_.push_back({in.sequence, static_cast<int64_t>(ids.size()), count, start});
    naive_step_ |= count > 1 && options_.prefill_attention == AttentionAlgorithm::kNaive;
    for (int64_t t = 0; t < count; ++t) {
      if (in.all_logits || t == count - 1) logit_rows.push_back(static_cast<int32_t>(ids.size()));
      ids.push_back(in.token_ids[t]);
      positions.push_back(static_cast<int32_t>(start + t));
      owners.push_back(static_cast<int32_t>(in.sequence));
    }
    logits.emplace_back(std::vector<int64_t>{in.all_logits ? count : 1, config_.vocab_size});
  }
  const auto tokens = static_cast<int64_t>(ids.size());
  if (tokens > options_.max_step_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("step of ", tokens, " tokens; the GPU model takes at most ",
                                                   options_.max_step_tokens, " (split the prefill into chunks)"));
  }
  std::vector<std::pair<int64_t, int32_t>> added;
  auto rollback = [&](absl::Status status) {
    for (auto it = added.rbegin(); it != added.rend(); ++it) {
      sequences_[it->first].pages.pop_back();
      free_pages_.push_back(it->second);
    }
    return status;
  };
  for (const GpuSequenceInput& in : inputs) {
    absl::Status grown = GrowSequence(in.sequence, sequences_[in.sequence].length + in.token_ids.size(), added);
    if (!grown.ok()) return rollback(grown);
  }
  cudaStream_t stream = AsStream(stream_);
  Buffers& b = *buffers_;
  absl::Status status = UploadBlockTable();
  const std::pair<DeviceBuffer*, const std::vector<int32_t>*> uploads[] = {
      {&b.token_ids, &ids}, {&b.token_pos, &positions}, {&b.token_seq, &owners}, {&b.logit_rows, &logit_rows}};
  for (const auto& [buffer, values] : uploads) {
    if (!status.ok()) break;
    status = CudaStatus(cudaMemcpyAsync(buffer->data(), values->data(), values->size() * 4, cudaMemcpyHostToDevice,
                                        stream), "step input upload");
  }
  // Two micro-batches only pay off (and are only taken) when the routed experts are a host round
  // trip; a routing observer sees whole steps.
  const bool host_experts = has_moe_layers_ && (cuda_experts_ == nullptr || step_experts_ != nullptr);
  if (status.ok() && micro_batches == 2 && host_experts && !(observer != nullptr && *observer) &&
      step_sequences_.size() >= 2) {
    std::vector<MicroBatch> batches = SplitInTwoMicroBatches();
    status = RunMicroBatches(tokens, batches);
  } else if (status.ok()) {
    status = RunLayers(tokens, /*capturable=*/false, observer);
  }
  // LM head over the requested rows, in chunks of max_logit_rows.
  std::vector<float> chunk;
  size_t output = 0;
  int64_t filled = 0;
  const auto total_rows = static_cast<int64_t>(logit_rows.size());
  for (int64_t first = 0; status.ok() && first < total_rows; first += options_.max_logit_rows) {
    const int64_t rows = std::min(options_.max_logit_rows, total_rows - first);
    status = NormRows(b.residual.as<float>(), nullptr, b.logit_rows.as<int32_t>() + first,
                      weights_.norm.data.as<float>(), rows, config_.hidden_size,
                      static_cast<float>(config_.rms_norm_eps), b.final_rows.as<float>());
    if (status.ok()) status = Linear(b.final_rows.as<float>(), rows, weights_.lm_head, b.logits.as<float>());
    chunk.resize(rows * config_.vocab_size);
    if (status.ok()) {
      status = CudaStatus(cudaMemcpyAsync(chunk.data(), b.logits.data(), chunk.size() * 4, cudaMemcpyDeviceToHost, stream),
                          "logits download");
    }
    if (status.ok()) status = CudaStatus(cudaStreamSynchronize(stream), "step");
    for (int64_t r = 0; status.ok() && r < rows; ++r) {
      std::copy(chunk.begin() + r * config_.vocab_size, chunk.begin() + (r + 1) * config_.vocab_size,
                logits[output].data() + filled * config_.vocab_size);
      if (++filled == logits[output].dim(0)) {
        ++output;
        filled = 0;
      }
    }
  }
  if (status.ok()) status = CudaStatus(cudaStreamSynchronize(stream), "step");
  if (status.ok() && cuda_experts_ != nullptr) status = cuda_experts_->DeviceErrors(stream_);
  if (!status.ok()) return rollback(status);
  for (const GpuSequenceInput& in : inputs) sequences_[in.sequence].length += in.token_ids.size();
  return logits;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> GpuModel::GenerateGreedy(std::span<const int64_t> sequences,
                                                                           std::span<const int32_t> next_tokens,
                                                                           int64_t steps, bool use_cuda_graph) {
  const auto batch = static_cast<int64_t>(sequences.size());
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  if (batch == 0 || static_cast<int64_t>(next_tokens.size()) != batch || steps <= 0) {
    return absl::InvalidArgumentError("GenerateGreedy: one next token per sequence and steps > 0 needed");
  }
  if (batch > options_.max_step_tokens || batch > options_.max_logit_rows) {
    return absl::InvalidArgumentError("GenerateGreedy: batch larger than max_step_tokens or max_logit_rows");
  }
  std::vector<GpuSequenceInput> check;
  for (int64_t i = 0; i < batch; ++i) check.push_back({sequences[i], next_tokens.subspan(i, 1), false});
  EXPERTMESH_RETURN_IF_ERROR(ValidateInputs(check));
  bool has_moe = false;
  for (int64_t layer = 0; layer < config_.num_hidden_layers; ++layer) has_moe |= config_.IsMoeLayer(layer);
  if (use_cuda_graph && has_moe && cuda_experts_ == nullptr) {
    return absl::FailedPreconditionError("CUDA-graph decoding needs the routed experts on this GPU (CudaRoutedExperts)");
  }
  std::vector<std::pair<int64_t, int32_t>> added;
  std::vector<int32_t> positions, owners;
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t s = sequences[i];
    absl::Status grown = GrowSequence(s, sequences_[s].length + steps, added);
    if (!grown.ok()) {
      for (auto it = added.rbegin(); it != added.rend(); ++it) {
        sequences_[it->first].pages.pop_back();
        free_pages_.push_back(it->second);
      }
      return grown;
    }
    positions.push_back(static_cast<int32_t>(sequences_[s].length));
    owners.push_back(static_cast<int32_t>(s));
  }
  Buffers& b = *buffers_;
  cudaStream_t stream = AsStream(stream_);
  EXPERTMESH_RETURN_IF_ERROR(Allocate(b.generated, batch * steps * 4));
  EXPERTMESH_RETURN_IF_ERROR(UploadBlockTable());
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(b.token_ids.data(), next_tokens.data(), batch * 4,
                                                        cudaMemcpyHostToDevice, stream), "upload"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(b.token_pos.data(), positions.data(), batch * 4,
                                                        cudaMemcpyHostToDevice, stream), "upload"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(b.first_pos.data(), positions.data(), batch * 4,
                                                        cudaMemcpyHostToDevice, stream), "upload"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(b.token_seq.data(), owners.data(), batch * 4,
                                                        cudaMemcpyHostToDevice, stream), "upload"));
  if (cuda_experts_ != nullptr) EXPERTMESH_RETURN_IF_ERROR(cuda_experts_->Reserve(batch, config_.num_experts_per_tok));
  step_sequences_.clear();
  naive_step_ = false;
  auto one_step = [&]() -> absl::Status {
    EXPERTMESH_RETURN_IF_ERROR(RunLayers(batch, /*capturable=*/use_cuda_graph, nullptr));
    EXPERTMESH_RETURN_IF_ERROR(NormRows(b.residual.as<float>(), nullptr, nullptr, weights_.norm.data.as<float>(),
                                        batch, config_.hidden_size, static_cast<float>(config_.rms_norm_eps),
                                        b.final_rows.as<float>()));
    EXPERTMESH_RETURN_IF_ERROR(Linear(b.final_rows.as<float>(), batch, weights_.lm_head, b.logits.as<float>()));
    return cuda::LaunchGreedyAdvance(b.logits.as<float>(), batch, config_.vocab_size, b.token_ids.as<int32_t>(),
                                     b.token_pos.as<int32_t>(), b.first_pos.as<int32_t>(), b.generated.as<int32_t>(),
                                     steps, stream, b.argmax_parts.data(), static_cast<int64_t>(b.argmax_parts.bytes()));
  };
  absl::Status status;
  if (use_cuda_graph) {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    status = CudaStatus(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    if (status.ok()) {
      absl::Status captured = one_step();
      status = CudaStatus(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
      if (!captured.ok()) status = captured;
    }
    if (status.ok()) status = CudaStatus(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
    for (int64_t s = 0; status.ok() && s < steps; ++s) status = CudaStatus(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  } else {
    for (int64_t s = 0; status.ok() && s < steps; ++s) status = one_step();
  }
  std::vector<int32_t> generated(batch * steps);
  if (status.ok()) {
    status = CudaStatus(cudaMemcpyAsync(generated.data(), b.generated.data(), generated.size() * 4,
                                        cudaMemcpyDeviceToHost, stream), "generated download");
  }
  if (status.ok()) status = CudaStatus(cudaStreamSynchronize(stream), "greedy decode");
  if (status.ok() && cuda_experts_ != nullptr) status = cuda_experts_->DeviceErrors(stream_);
  if (!status.ok()) {
    for (auto it = added.rbegin(); it != added.rend(); ++it) {
      sequences_[it->first].pages.pop_back();
      free_pages_.push_back(it->second);
    }
    return status;
  }
  std::vector<std::vector<int32_t>> out(batch);
  for (int64_t i = 0; i < batch; ++i) {
    sequences_[sequences[i]].length += steps;
    out[i].assign(generated.begin() + i * steps, generated.begin() + (i + 1) * steps);
  }
  return out;
}

}  // namespace expertmesh
