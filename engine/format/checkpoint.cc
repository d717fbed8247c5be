// Checkpoint: directory layout (single file or index + shards), name-filtered tensor index, float32
// loads with FP8 block dequantization and NaN/inf checks, zero-copy raw views.
#include "engine/format/checkpoint.h"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/format/safetensors_file.h"
#include "engine/format/shard_index.h"

namespace expertmesh {
namespace {

constexpr absl::string_view kScaleSuffix = "_scale_inv";

absl::StatusOr<std::string> ReadTextFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code error;
    if (!std::filesystem::exists(path, error)) return absl::NotFoundError(absl::StrCat(path.string(), " does not exist"));
    return absl::PermissionDeniedError(absl::StrCat("cannot read ", path.string()));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("reading ", path.string(), " failed"));
  return text.str();
}

// Prefixes a status message with context, keeping its code.
absl::Status WithContext(const absl::Status& status, absl::string_view context) {
  return absl::Status(status.code(), absl::StrCat(context, status.message()));
}

// First non-finite value of `values`, if any.
std::optional<size_t> FirstNonFinite(std::span<const float> values) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) return i;
  }
  return std::nullopt;
}

std::string NonFiniteMessage(const TensorLocation& location, std::span<const float> values, size_t index,
                             absl::string_view what) {
  return absl::StrCat(location.file.string(), ": tensor '", location.name, "': ", what, " element ", index, " is ",
                      std::isnan(values[index]) ? "NaN" : "infinite");
}

}  // namespace

Checkpoint::~Checkpoint() = default;

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(
    const std::filesystem::path& directory, std::function<bool(const std::string& tensor_name)> name_filter) {
  std::error_code error;
  if (!std::filesystem::is_directory(directory, error)) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory ", directory.string(), " does not exist"));
  }
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->directory_ = directory;
  EXPERTMESH_ASSIGN_OR_RETURN(checkpoint->config_, ModelConfig::FromFile(directory / "config.json"));

  // FP8 weights travel with their scales: `<name>_scale_inv` is indexed whenever `<name>` is.
  auto wanted = [&name_filter](const std::string& name) {
    if (!name_filter || name_filter(name)) return true;
    return absl::EndsWith(name, kScaleSuffix) && name_filter(name.substr(0, name.size() - kScaleSuffix.size()));
  };
  auto add = [&](SafetensorsFile& file, const SafetensorsEntry& entry) -> absl::Status {
    if (!entry.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(file.path().string(), ": tensor '", entry.name, "' has dtype ",
                                                     entry.dtype_name,
                                                     ", which the engine does not read (F32, BF16, F16, F8_E4M3)"));
    }
    checkpoint->tensors_[entry.name] =
        TensorLocation{entry.name, *entry.dtype, entry.shape, file.path(), entry.begin, entry.end - entry.begin};
    return absl::OkStatus();
  };

  // Like transformers, a single model.safetensors wins over an index.
  const std::filesystem::path single = directory / "model.safetensors";
  const std::filesystem::path index_path = directory / "model.safetensors.index.json";
  if (std::filesystem::exists(single, error)) {
    EXPERTMESH_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(single));
    for (const SafetensorsEntry& entry : file->header().tensors) {
      if (wanted(entry.name)) EXPERTMESH_RETURN_IF_ERROR(add(*file, entry));
    }
    checkpoint->files_[single] = std::move(file);
    return checkpoint;
  }
  if (!std::filesystem::exists(index_path, error)) {
    return absl::NotFoundError(absl::StrCat("checkpoint directory ", directory.string(),
                                            " has neither model.safetensors nor model.safetensors.index.json"));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(std::string index_text, ReadTextFile(index_path));
  EXPERTMESH_ASSIGN_OR_RETURN(ShardIndex index, ParseShardIndex(index_text, index_path.string()));
  std::map<std::string, std::vector<std::string>> names_by_shard;
  for (const auto& [name, shard] : index.weight_map) {
    if (wanted(name)) names_by_shard[shard].push_back(name);
  }
  // Only shards holding a wanted tensor are opened.
  for (const auto& [shard, names] : names_by_shard) {
    const std::filesystem::path shard_path = directory / shard;
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(shard_path);
    if (!file.ok()) {
      return WithContext(file.status(), absl::StrCat(index_path.string(), " maps tensor '", names.front(),
                                                     "' to shard ", shard, ": "));
    }
    for (const std::string& name : names) {
      const SafetensorsEntry* entry = (*file)->Find(name);
      if (entry == nullptr) {
        return absl::DataLossError(absl::StrCat(index_path.string(), " maps tensor '", name, "' to ",
                                                shard_path.string(), ", which has no such tensor"));
      }
      EXPERTMESH_RETURN_IF_ERROR(add(**file, *entry));
    }
    checkpoint->files_[shard_path] = *std::move(file);
  }
  return checkpoint;
}

bool Checkpoint::Contains(const std::string& name) const { return tensors_.contains(name); }

const TensorLocation* Checkpoint::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, location] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<std::span<const std::byte>> Checkpoint::RawBytes(const std::string& name) const {
  const TensorLocation* location = Find(name);
  if (location == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' is not in checkpoint ", directory_.string()));
  }
  const SafetensorsFile& file = *files_.at(location->file);
  const SafetensorsEntry* entry = file.Find(name);
  return file.Bytes(*entry);
}

absl::StatusOr<Tensor> Checkpoint::LoadFloat(const std::string& name,
                                             const std::vector<int64_t>* expected_shape) const {
  const TensorLocation* location = Find(name);
  if (location == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' is not in checkpoint ", directory_.string()));
  }
  const std::string where = absl::StrCat(location->file.string(), ": tensor '", name, "'");
  if (expected_shape != nullptr && *expected_shape != location->shape) {
    return absl::InvalidArgumentError(absl::StrCat(where, " has shape ", FormatShape(location->shape),
                                                   ", expected ", FormatShape(*expected_shape)));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(std::span<const std::byte> bytes, RawBytes(name));
  Tensor tensor(location->shape);
  ConvertToFloat(location->dtype, bytes.data(), static_cast<size_t>(tensor.size()), tensor.data());
  if (std::optional<size_t> bad = FirstNonFinite(tensor.values())) {
    return absl::DataLossError(NonFiniteMessage(*location, tensor.values(), *bad, "stored"));
  }
  if (location->dtype != DType::kF8E4M3) return tensor;

  // DeepSeek-V3 block-scaled FP8: value = fp8 * scale_inv[row / block_rows, col / block_cols].
  if (!config_.fp8_block_quantized) {
    return absl::InvalidArgumentError(absl::StrCat(where, " is F8_E4M3 but config.json has no fp8 "
                                                          "quantization_config (block size unknown)"));
  }
  if (location->shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(where, " is F8_E4M3 with shape ", FormatShape(location->shape),
                                                   "; block scaling needs a matrix"));
  }
  const std::string scale_name = name + std::string(kScaleSuffix);
  const TensorLocation* scale_location = Find(scale_name);
  if (scale_location == nullptr) {
    return absl::NotFoundError(absl::StrCat(where, " is F8_E4M3 but its scale tensor '", scale_name,
                                            "' is not in checkpoint ", directory_.string()));
  }
  const int64_t rows = location->shape[0], cols = location->shape[1];
  const int64_t block_rows = config_.fp8_block_rows, block_cols = config_.fp8_block_cols;
  const std::vector<int64_t> scale_shape = {(rows + block_rows - 1) / block_rows, (cols + block_cols - 1) / block_cols};
  if (scale_location->shape != scale_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        scale_location->file.string(), ": tensor '", scale_name, "' has shape ", FormatShape(scale_location->shape),
        ", expected ", FormatShape(scale_shape), " for ", name, " ", FormatShape(location->shape), " in ", block_rows,
        "x", block_cols, " blocks"));
  }
  if (scale_location->dtype == DType::kF8E4M3) {
    return absl::InvalidArgumentError(absl::StrCat(scale_location->file.string(), ": tensor '", scale_name,
                                                   "' must be a float scale, not F8_E4M3"));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(Tensor scales, LoadFloat(scale_name));
  for (float scale : scales.values()) {
    if (scale < 0.0f) {
      return absl::DataLossError(absl::StrCat(scale_location->file.string(), ": tensor '", scale_name,
                                              "' has a negative scale ", scale));
    }
  }
  float* values = tensor.data();
  for (int64_t row = 0; row < rows; ++row) {
    const float* scale_row = scales.data() + (row / block_rows) * scale_shape[1];
    for (int64_t col = 0; col < cols; ++col) values[row * cols + col] *= scale_row[col / block_cols];
  }
  if (std::optional<size_t> bad = FirstNonFinite(tensor.values())) {
    return absl::DataLossError(NonFiniteMessage(*location, tensor.values(), *bad, "dequantized"));
  }
  return tensor;
}

}  // namespace expertmesh
