// CudaRoutedExperts: weight upload (format conversion on the device), per-layer slot tables,
// scratch management and the batch pipeline (permute, gather, expert products, combine).
#include "engine/model/cuda/cuda_routed_experts.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/core/status_macros.h"
#include "engine/ops/cuda/cuda_status.h"
#include "engine/ops/cuda/few_token_experts.h"
#include "engine/ops/cuda/moe_kernels.h"

namespace expertmesh {
namespace {

using cuda::CudaStatus;
using cuda::DeviceBuffer;
using cuda::ElementType;

int64_t Blocks128(int64_t n) { return (n + 127) / 128; }

cudaStream_t AsStream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace


CudaRoutedExperts::CudaRoutedExperts(const CudaExpertOptions& options) : options_(options) {}

CudaRoutedExperts::Scratch::~Scratch() {
  if (pinned != nullptr) cudaFreeHost(pinned);
}

CudaRoutedExperts::~CudaRoutedExperts() {
  if (stream_ != nullptr) cudaStreamDestroy(AsStream(stream_));
  for (void* s : cublas_streams_) {
    if (s != nullptr) cudaStreamDestroy(AsStream(s));
  }
  if (fork_event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(fork_event_));
  for (void* e : join_events_) {
    if (e != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(e));
  }
}

absl::StatusOr<std::unique_ptr<CudaRoutedExperts>> CudaRoutedExperts::Create(const CudaExpertOptions& options) {
  if (options.hidden_size <= 0 || options.intermediate_size <= 0 || options.n_routed_experts <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("CudaRoutedExperts: bad sizes hidden ", options.hidden_size,
                                                   " intermediate ", options.intermediate_size, " experts ",
                                                   options.n_routed_experts));
  }
  if (options.hidden_size % 8 != 0 || options.intermediate_size % 8 != 0) {
    return absl::InvalidArgumentError("CudaRoutedExperts: hidden and intermediate sizes must be multiples of 8");
  }
  EXPERTMESH_RETURN_IF_ERROR(cuda::CheckDeviceAvailable());
  EXPERTMESH_RETURN_IF_ERROR(cuda::PrepareExpertKernels());  // before any graph capture
  EXPERTMESH_RETURN_IF_ERROR(cuda::PrepareFewTokenExpertKernels());
  std::unique_ptr<CudaRoutedExperts> experts(new CudaRoutedExperts(options));
  experts->device_ = cuda::CurrentDevice();
  EXPERTMESH_ASSIGN_OR_RETURN(experts->blas_[0], cuda::CublasContext::Create());
  cudaStream_t stream = nullptr;
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  experts->stream_ = stream;
  experts->scratch_ = std::make_unique<Scratch>();
  EXPERTMESH_ASSIGN_OR_RETURN(experts->scratch_->error, DeviceBuffer::Allocate(sizeof(int32_t)));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemset(experts->scratch_->error.data(), 0, sizeof(int32_t)), "cudaMemset"));
  EXPERTMESH_ASSIGN_OR_RETURN(experts->scratch_->offsets,
                              DeviceBuffer::Allocate((options.n_routed_experts + 1) * sizeof(int32_t)));
  EXPERTMESH_ASSIGN_OR_RETURN(experts->scratch_->active,
                              DeviceBuffer::Allocate((options.n_routed_experts + 1) * sizeof(int32_t)));
  int sm_count = 0;
  if (cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, experts->device_) == cudaSuccess &&
      sm_count > 0) {
    experts->sm_count_ = sm_count;
  }
  return experts;
}

bool CudaRoutedExperts::HasExpert(int64_t layer, int32_t expert) const {
  auto it = layers_.find(layer);
  return it != layers_.end() && expert >= 0 && expert < options_.n_routed_experts &&
         it->second.slot_of_expert[expert] >= 0;
}

int64_t CudaRoutedExperts::num_experts() const {
  int64_t count = 0;
  for (const auto& [index, layer] : layers_) count += static_cast<int64_t>(layer.slots.size());
  return count;
}

uint64_t CudaRoutedExperts::DeviceWeightBytes() const {
  uint64_t bytes = 0;
  for (const auto& [index, layer] : layers_) {
    for (const ExpertStorage& s : layer.slots) {
      bytes += s.gate_up.bytes() + s.down.bytes() + s.gate_up_scale.bytes() + s.down_scale.bytes();
    }
  }
  return bytes;
}

absl::StatusOr<CudaRoutedExperts::ExpertStorage*> CudaRoutedExperts::SlotFor(int64_t layer, int32_t expert) {
  if (layer < 0 || expert < 0 || expert >= options_.n_routed_experts) {
    return absl::InvalidArgumentError(absl::StrCat("bad expert address layer ", layer, " expert ", expert));
  }
  LayerStorage& storage = layers_[layer];
  if (storage.slot_of_expert.empty()) storage.slot_of_expert.assign(options_.n_routed_experts, -1);
  int32_t& slot = storage.slot_of_expert[expert];
  if (slot >= 0) return &storage.slots[slot];
  if (storage.slots.size() >= 1024) {
    return absl::ResourceExhaustedError("CudaRoutedExperts: at most 1024 experts per layer on one GPU");
  }
  const int64_t h = options_.hidden_size, i = options_.intermediate_size;
  const bool fp8 = options_.format == GpuExpertFormat::kFP8Block;
  const size_t element = options_.format == GpuExpertFormat::kF32 ? 4 : (fp8 ? 1 : 2);
  ExpertStorage fresh;
  EXPERTMESH_ASSIGN_OR_RETURN(fresh.gate_up, DeviceBuffer::Allocate(2 * i * h * element));
  EXPERTMESH_ASSIGN_OR_RETURN(fresh.down, DeviceBuffer::Allocate(h * i * element));
  if (fp8) {
    EXPERTMESH_ASSIGN_OR_RETURN(fresh.gate_up_scale, DeviceBuffer::Allocate(2 * Blocks128(i) * Blocks128(h) * 4));
    EXPERTMESH_ASSIGN_OR_RETURN(fresh.down_scale, DeviceBuffer::Allocate(Blocks128(h) * Blocks128(i) * 4));
  }
  storage.slots.push_back(std::move(fresh));
  slot = static_cast<int32_t>(storage.slots.size() - 1);
  EXPERTMESH_RETURN_IF_ERROR(UploadTables(storage));
  return &storage.slots[slot];
}

absl::Status CudaRoutedExperts::UploadTables(LayerStorage& layer) {
  const size_t slots = layer.slots.size();
  EXPERTMESH_RETURN_IF_ERROR(layer.device_slot_of_expert.GrowTo(layer.slot_of_expert.size() * sizeof(int32_t)));
  // Stream-ordered with the kernels that read the tables (stream_ does not wait for the legacy stream).
  cudaStream_t stream = AsStream(stream_);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(layer.device_slot_of_expert.data(), layer.slot_of_expert.data(),
                                                        layer.slot_of_expert.size() * sizeof(int32_t),
                                                        cudaMemcpyHostToDevice, stream),
                                        "slot table upload"));
  std::vector<const void*> pointers(4 * slots);
  for (size_t s = 0; s < slots; ++s) {
    pointers[s] = layer.slots[s].gate_up.data();
    pointers[slots + s] = layer.slots[s].down.data();
    pointers[2 * slots + s] = layer.slots[s].gate_up_scale.data();
    pointers[3 * slots + s] = layer.slots[s].down_scale.data();
  }
  EXPERTMESH_RETURN_IF_ERROR(layer.device_pointers.GrowTo(pointers.size() * sizeof(void*)));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(layer.device_pointers.data(), pointers.data(),
                                                        pointers.size() * sizeof(void*), cudaMemcpyHostToDevice, stream),
                                        "pointer table upload"));
  return CudaStatus(cudaStreamSynchronize(stream), "table upload");  // `pointers` is freed on return
}

absl::Status CudaRoutedExperts::UploadTensor(std::span<const std::byte> bytes, DType dtype, int64_t rows, int64_t cols,
                                             std::span<const std::byte> scale, void* destination, void* stream) {
  const int64_t count = rows * cols;
  if (static_cast<int64_t>(bytes.size()) != count * static_cast<int64_t>(DTypeSize(dtype))) {
    return absl::InvalidArgumentError(absl::StrCat("expert tensor has ", bytes.size(), " bytes, expected [", rows, ", ",
                                                   cols, "] of ", std::string(DTypeName(dtype))));
  }
  const bool fp8_source = dtype == DType::kF8E4M3;
  const int64_t scale_count = Blocks128(rows) * Blocks128(cols);
  if (fp8_source && static_cast<int64_t>(scale.size()) != scale_count * 4) {
    return absl::InvalidArgumentError(absl::StrCat("FP8 expert tensor needs ", scale_count,
                                                   " float32 block scales, got ", scale.size(), " bytes"));
  }
  cudaStream_t s = AsStream(stream);
  switch (options_.format) {
    case GpuExpertFormat::kFP8Block:
      if (!fp8_source) return absl::InvalidArgumentError("kFP8Block experts need FP8 E4M3 weights with scales");
      return CudaStatus(cudaMemcpyAsync(destination, bytes.data(), bytes.size(), cudaMemcpyHostToDevice, s),
                        "expert upload");
    case GpuExpertFormat::kBF16: {
      if (dtype == DType::kBF16) {
        return CudaStatus(cudaMemcpyAsync(destination, bytes.data(), bytes.size(), cudaMemcpyHostToDevice, s),
                          "expert upload");
      }
      DeviceBuffer staging, staged_scale;
      if (fp8_source) {
        EXPERTMESH_ASSIGN_OR_RETURN(staging, DeviceBuffer::Allocate(bytes.size()));
        EXPERTMESH_ASSIGN_OR_RETURN(staged_scale, DeviceBuffer::Allocate(scale.size()));
        // On the conversion's own stream: a synchronous cudaMemcpy runs on the legacy stream,
        // which this non-blocking stream does not wait for (a pageable copy may still be in flight).
        EXPERTMESH_RETURN_IF_ERROR(CudaStatus(
            cudaMemcpyAsync(staging.data(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice, s), "expert upload"));
        EXPERTMESH_RETURN_IF_ERROR(CudaStatus(
            cudaMemcpyAsync(staged_scale.data(), scale.data(), scale.size(), cudaMemcpyHostToDevice, s), "scale upload"));
        EXPERTMESH_RETURN_IF_ERROR(cuda::LaunchDequantizeFp8Block(staging.as<uint8_t>(), staged_scale.as<float>(), rows,
                                                                  cols, rows, static_cast<uint16_t*>(destination), s));
      } else {
        std::vector<float> widened;
        const float* source = reinterpret_cast<const float*>(bytes.data());
        if (dtype != DType::kF32) {
          widened.resize(count);
          ConvertToFloat(dtype, bytes.data(), count, widened.data());
          source = widened.data();
        }
        EXPERTMESH_ASSIGN_OR_RETURN(staging, DeviceBuffer::Allocate(count * sizeof(float)));
        EXPERTMESH_RETURN_IF_ERROR(CudaStatus(
            cudaMemcpyAsync(staging.data(), source, count * sizeof(float), cudaMemcpyHostToDevice, s), "expert upload"));
        EXPERTMESH_RETURN_IF_ERROR(
            cuda::LaunchFloatToBFloat16(staging.as<float>(), static_cast<uint16_t*>(destination), count, s));
      }
      // The staging buffers are freed on return: wait for the conversion.
      return CudaStatus(cudaStreamSynchronize(s), "expert conversion");
    }
    case GpuExpertFormat::kF32: {
      std::vector<float> values(count);
      ConvertToFloat(dtype, bytes.data(), count, values.data());
      if (fp8_source) {
        const float* scales = reinterpret_cast<const float*>(scale.data());
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) values[r * cols + c] *= scales[(r / 128) * Blocks128(cols) + c / 128];
        }
      }
      EXPERTMESH_RETURN_IF_ERROR(CudaStatus(
          cudaMemcpyAsync(destination, values.data(), count * sizeof(float), cudaMemcpyHostToDevice, s), "expert upload"));
      return CudaStatus(cudaStreamSynchronize(s), "expert upload");
    }
  }
  return absl::InternalError("unknown expert format");
}

namespace {

// Raw checkpoint bytes go to the device unconverted, so their values are checked here, as
// Checkpoint::LoadFloat checks the CPU engine's: NaN/inf weights, and FP8 block scales that are
// not finite and >= 0, are DATA_LOSS naming the tensor and element (before anything is uploaded).
absl::Status CheckStoredValues(absl::string_view tensor, DType dtype, std::span<const std::byte> bytes,
                               std::span<const std::byte> scale) {
  if (std::optional<size_t> bad = FirstNonFiniteStored(dtype, bytes.data(), bytes.size() / DTypeSize(dtype))) {
    return absl::DataLossError(absl::StrCat(tensor, " element ", *bad, " is NaN or infinite (",
                                            std::string(DTypeName(dtype)), ")"));
  }
  for (size_t i = 0; i + 4 <= scale.size(); i += 4) {
    float value;
    std::memcpy(&value, scale.data() + i, 4);
    if (!std::isfinite(value) || value < 0.0f) {
      return absl::DataLossError(absl::StrCat(tensor, "_scale_inv block ", i / 4, " is ", value,
                                              " (FP8 block scales must be finite and >= 0)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaRoutedExperts::SetExpertFromBytes(int64_t layer, int32_t expert, const ExpertTensorBytes& bytes) {
  const std::string what = absl::StrCat("layer ", layer, " expert ", expert, ": ");
  auto annotate = [&](absl::Status status) {
    return status.ok() ? status : absl::Status(status.code(), what + std::string(status.message()));
  };
  EXPERTMESH_RETURN_IF_ERROR(annotate(CheckStoredValues("gate_proj", bytes.dtype, bytes.gate, bytes.gate_scale)));
  EXPERTMESH_RETURN_IF_ERROR(annotate(CheckStoredValues("up_proj", bytes.dtype, bytes.up, bytes.up_scale)));
  EXPERTMESH_RETURN_IF_ERROR(annotate(CheckStoredValues("down_proj", bytes.dtype, bytes.down, bytes.down_scale)));
  std::lock_guard<std::mutex> lock(mutex_);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  const bool fp8_source = bytes.dtype == DType::kF8E4M3;
  if (options_.format == GpuExpertFormat::kFP8Block && !fp8_source) {
    return absl::InvalidArgumentError("kFP8Block experts need FP8 E4M3 weights with scales");
  }
  EXPERTMESH_ASSIGN_OR_RETURN(ExpertStorage * storage, SlotFor(layer, expert));
  const int64_t h = options_.hidden_size, i = options_.intermediate_size;
  const size_t element = options_.format == GpuExpertFormat::kF32 ? 4
                         : options_.format == GpuExpertFormat::kFP8Block ? 1 : 2;
  auto* gate_up = static_cast<std::byte*>(storage->gate_up.data());
  const bool fp8_target = options_.format == GpuExpertFormat::kFP8Block;
  EXPERTMESH_RETURN_IF_ERROR(annotate(UploadTensor(bytes.gate, bytes.dtype, i, h, bytes.gate_scale, gate_up, stream_)));
  EXPERTMESH_RETURN_IF_ERROR(
      annotate(UploadTensor(bytes.up, bytes.dtype, i, h, bytes.up_scale, gate_up + i * h * element, stream_)));
  EXPERTMESH_RETURN_IF_ERROR(annotate(UploadTensor(bytes.down, bytes.dtype, h, i, bytes.down_scale,
                                                   storage->down.data(), stream_)));
  if (fp8_target) {
    auto* scale = static_cast<std::byte*>(storage->gate_up_scale.data());
    cudaStream_t s = AsStream(stream_);
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(scale, bytes.gate_scale.data(), bytes.gate_scale.size(),
                                                          cudaMemcpyHostToDevice, s), "scale upload"));
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(scale + bytes.gate_scale.size(), bytes.up_scale.data(),
                                                          bytes.up_scale.size(), cudaMemcpyHostToDevice, s),
                                          "scale upload"));
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(storage->down_scale.data(), bytes.down_scale.data(),
                                                          bytes.down_scale.size(), cudaMemcpyHostToDevice, s),
                                          "scale upload"));
  }
  // Checkpoint views may be unmapped after return: finish the copies.
  return CudaStatus(cudaStreamSynchronize(AsStream(stream_)), "expert upload");
}

absl::StatusOr<CudaRoutedExperts::DeviceWeights> CudaRoutedExperts::MutableDeviceWeights(int64_t layer,
                                                                                        int32_t expert) {
  std::lock_guard<std::mutex> lock(mutex_);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  EXPERTMESH_ASSIGN_OR_RETURN(ExpertStorage * storage, SlotFor(layer, expert));
  DeviceWeights view;
  view.gate_up = storage->gate_up.data();
  view.down = storage->down.data();
  view.gate_up_scale = storage->gate_up_scale.as<float>();
  view.down_scale = storage->down_scale.as<float>();
  view.gate_up_bytes = storage->gate_up.bytes();
  view.down_bytes = storage->down.bytes();
  view.gate_up_scale_bytes = storage->gate_up_scale.bytes();
  view.down_scale_bytes = storage->down_scale.bytes();
  return view;
}

absl::Status CudaRoutedExperts::SetExpert(int64_t layer, int32_t expert, const MlpWeights& weights) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateMlpWeights(weights, options_.hidden_size, options_.intermediate_size,
                                                absl::StrCat("layer ", layer, " expert ", expert)));
  auto as_bytes = [](const Tensor& t) {
    return std::span<const std::byte>(reinterpret_cast<const std::byte*>(t.data()), t.size() * sizeof(float));
  };
  ExpertTensorBytes bytes;
  bytes.dtype = DType::kF32;
  bytes.gate = as_bytes(weights.gate_proj);
  bytes.up = as_bytes(weights.up_proj);
  bytes.down = as_bytes(weights.down_proj);
  return SetExpertFromBytes(layer, expert, bytes);
}

absl::Status CudaRoutedExperts::Reserve(int64_t tokens, int64_t top_k) {
  std::lock_guard<std::mutex> lock(mutex_);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  return EnsureScratch(tokens, top_k, tokens * top_k);
}

absl::Status CudaRoutedExperts::EnsureScratch(int64_t tokens, int64_t top_k, int64_t local_rows) {
  Scratch& s = *scratch_;
  const int64_t h = options_.hidden_size, i = options_.intermediate_size;
  if (tokens > s.token_capacity) {
    EXPERTMESH_RETURN_IF_ERROR(s.activations.GrowTo(tokens * h * sizeof(float)));
    EXPERTMESH_RETURN_IF_ERROR(s.output.GrowTo(tokens * h * sizeof(float)));
    s.token_capacity = tokens;
  }
  const int64_t slots = tokens * top_k;
  if (slots > s.slot_capacity) {
    for (DeviceBuffer* buffer : {&s.ids, &s.weights, &s.row_token, &s.row_of_slot}) {
      EXPERTMESH_RETURN_IF_ERROR(buffer->GrowTo(slots * sizeof(int32_t)));
    }
    // Sized for every expert held locally (at most n_routed_experts per layer).
    EXPERTMESH_RETURN_IF_ERROR(s.permutation_work.GrowTo(
        cuda::ExpertPermutationWorkInts(slots, std::max<int64_t>(options_.n_routed_experts, 1)) * sizeof(int32_t)));
    s.slot_capacity = slots;
  }
  if (local_rows > s.row_capacity) {
    EXPERTMESH_RETURN_IF_ERROR(s.rows.GrowTo(local_rows * h * sizeof(float)));
    EXPERTMESH_RETURN_IF_ERROR(s.h.GrowTo(local_rows * i * sizeof(float)));
    EXPERTMESH_RETURN_IF_ERROR(s.y.GrowTo(local_rows * h * sizeof(float)));
    s.row_capacity = local_rows;
  }
  return absl::OkStatus();
}

absl::Status CudaRoutedExperts::Compute(const RoutedExpertBatch& batch, std::span<float> output) {
  const int64_t tokens = batch.num_tokens, top_k = batch.top_k, hidden = options_.hidden_size;
  if (batch.hidden_size != hidden) {
    return absl::InvalidArgumentError(absl::StrCat("expert batch hidden_size ", batch.hidden_size, ", experts have ",
                                                   hidden));
  }
  if (tokens < 0 || top_k < 0 || static_cast<int64_t>(batch.activations.size()) != tokens * hidden ||
      static_cast<int64_t>(batch.expert_ids.size()) != tokens * top_k ||
      static_cast<int64_t>(batch.gate_weights.size()) != tokens * top_k ||
      static_cast<int64_t>(output.size()) != tokens * hidden) {
    return absl::InvalidArgumentError(absl::StrCat("expert batch sizes inconsistent: tokens ", tokens, ", top_k ", top_k,
                                                   ", activations ", batch.activations.size(), ", ids ",
                                                   batch.expert_ids.size(), ", weights ", batch.gate_weights.size(),
                                                   ", output ", output.size()));
  }
  int64_t local_rows = 0;
  for (int64_t slot = 0; slot < tokens * top_k; ++slot) {
    const int32_t expert = batch.expert_ids[slot];
    if (expert < 0) continue;
    if (!HasExpert(batch.layer, expert)) {
      return absl::NotFoundError(absl::StrCat("routed expert ", expert, " of layer ", batch.layer, " is not held here"));
    }
    if (!std::isfinite(batch.gate_weights[slot])) {
      return absl::InvalidArgumentError(absl::StrCat("non-finite gate weight for token ", slot / top_k, " slot ",
                                                     slot % top_k));
    }
    ++local_rows;
  }
  if (local_rows == 0) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mutex_);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  EXPERTMESH_RETURN_IF_ERROR(EnsureScratch(tokens, top_k, local_rows));
  Scratch& s = *scratch_;
  // Pinned staging: [activations | output] float32, then ids and gate weights.
  const size_t activation_bytes = tokens * hidden * sizeof(float), slot_bytes = tokens * top_k * sizeof(int32_t);
  const size_t staging_bytes = 2 * activation_bytes + 2 * slot_bytes;
  if (s.pinned_bytes < staging_bytes) {
    if (s.pinned != nullptr) cudaFreeHost(s.pinned);
    s.pinned = nullptr;
    s.pinned_bytes = 0;
    const size_t bytes = std::max<size_t>(staging_bytes, 1 << 20);
    EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaHostAlloc(&s.pinned, bytes, cudaHostAllocDefault), "cudaHostAlloc"));
    s.pinned_bytes = bytes;
  }
  auto* staged_activations = static_cast<float*>(s.pinned);
  float* staged_output = staged_activations + tokens * hidden;
  auto* staged_ids = reinterpret_cast<int32_t*>(staged_output + tokens * hidden);
  auto* staged_weights = reinterpret_cast<float*>(staged_ids + tokens * top_k);
  std::memcpy(staged_activations, batch.activations.data(), activation_bytes);
  std::memcpy(staged_ids, batch.expert_ids.data(), slot_bytes);
  std::memcpy(staged_weights, batch.gate_weights.data(), slot_bytes);
  cudaStream_t stream = AsStream(stream_);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(s.activations.data(), staged_activations, activation_bytes,
                                                        cudaMemcpyHostToDevice, stream),
                                        "activations upload"));
  EXPERTMESH_RETURN_IF_ERROR(
      CudaStatus(cudaMemcpyAsync(s.ids.data(), staged_ids, slot_bytes, cudaMemcpyHostToDevice, stream), "expert ids upload"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(
      cudaMemcpyAsync(s.weights.data(), staged_weights, slot_bytes, cudaMemcpyHostToDevice, stream), "gate weights upload"));
  DeviceExpertBatch device_batch;
  device_batch.layer = batch.layer;
  device_batch.num_tokens = tokens;
  device_batch.top_k = top_k;
  device_batch.activations = s.activations.as<float>();
  device_batch.expert_ids = s.ids.as<int32_t>();
  device_batch.gate_weights = s.weights.as<float>();
  device_batch.output = s.output.as<float>();
  EXPERTMESH_RETURN_IF_ERROR(RunExperts(layers_.at(batch.layer), device_batch, stream_));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(staged_output, s.output.data(), activation_bytes,
                                                        cudaMemcpyDeviceToHost, stream),
                                        "expert output download"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "expert batch"));
  for (int64_t i = 0; i < tokens * hidden; ++i) output[i] += staged_output[i];
  return absl::OkStatus();
}

absl::Status CudaRoutedExperts::ComputeOnDevice(const DeviceExpertBatch& batch, void* stream) {
  if (batch.num_tokens < 0 || batch.top_k <= 0) {
    return absl::InvalidArgumentError("device expert batch: num_tokens >= 0 and top_k > 0 needed");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  auto it = layers_.find(batch.layer);
  if (it == layers_.end()) {
    // No expert of this layer here: every slot names an expert not held, unless all are empty.
    // The output is left as is (+= 0) or zeroed.
    if (!batch.accumulate && batch.num_tokens > 0) {
      EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(batch.output, 0,
                                                            batch.num_tokens * options_.hidden_size * sizeof(float),
                                                            AsStream(stream)), "cudaMemsetAsync"));
    }
    return absl::OkStatus();
  }
  EXPERTMESH_RETURN_IF_ERROR(EnsureScratch(batch.num_tokens, batch.top_k, 0));
  return RunExperts(it->second, batch, stream);
}

absl::Status CudaRoutedExperts::DeviceErrors(void* stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(AsStream(stream)), "expert batch"));
  int32_t flag = 0;
  EXPERTMESH_RETURN_IF_ERROR(scratch_->error.CopyToHost(&flag, sizeof(flag)));
  if (flag == 0) return absl::OkStatus();
  EXPERTMESH_RETURN_IF_ERROR(CudaStatus(cudaMemset(scratch_->error.data(), 0, sizeof(int32_t)), "cudaMemset"));
  return absl::NotFoundError("a device expert batch named a routed expert not held here (slot dropped)");
}

}  // namespace expertmesh
