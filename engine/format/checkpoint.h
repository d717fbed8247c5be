// Checkpoint: a read-only view of a DeepSeek checkpoint directory (config.json plus one
// model.safetensors or sharded model-*.safetensors with model.safetensors.index.json). Files are
// mmapped; tensors are converted to float32 on request, FP8 ones multiplied by their
// `<name>_scale_inv` block scales (block size from quantization_config: 128x128 in DeepSeek-V3).
// Every error names the file and the tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/dtype.h"
#include "engine/core/tensor.h"
#include "engine/format/model_config.h"

namespace expertmesh {

class SafetensorsFile;  // engine/format/safetensors_file.h

// Where one tensor lives.
struct TensorLocation {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::filesystem::path file;
  uint64_t byte_offset = 0;  // within the file's data section
  uint64_t byte_size = 0;
};

class Checkpoint {
 public:
  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  // Opens `directory`: parses config.json and every safetensors header (not the tensor bytes).
  // A single model.safetensors wins over an index (as in transformers). With a name filter, only
  // tensors for which it returns true (and their `_scale_inv`) are indexed, so shard files
  // without such tensors are never opened (an expert shard touches only its bytes). Index
  // shard names must be plain file names inside `directory`.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(
      const std::filesystem::path& directory,
      std::function<bool(const std::string& tensor_name)> name_filter = nullptr);

  const ModelConfig& config() const { return config_; }
  const std::filesystem::path& directory() const { return directory_; }

  bool Contains(const std::string& name) const;
  // nullptr when absent.
  const TensorLocation* Find(const std::string& name) const;
  std::vector<std::string> TensorNames() const;  // sorted

  // Loads `name` as float32 with its stored shape. FP8 tensors are dequantized with their
  // `<name>_scale_inv`. NOT_FOUND names the missing tensor; DATA_LOSS/INVALID_ARGUMENT name file
  // and tensor for bad bytes. If `expected_shape` is given, a different shape is INVALID_ARGUMENT.
  absl::StatusOr<Tensor> LoadFloat(const std::string& name,
                                   const std::vector<int64_t>* expected_shape = nullptr) const;

  // Raw stored bytes of a tensor (zero-copy view into the mmapped file), for loaders that keep
  // the serving dtype (GPU backends, merges).
  absl::StatusOr<std::span<const std::byte>> RawBytes(const std::string& name) const;

 private:
  Checkpoint() = default;
  ModelConfig config_;
  std::filesystem::path directory_;
  std::map<std::string, TensorLocation> tensors_;
  std::map<std::filesystem::path, std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace expertmesh
