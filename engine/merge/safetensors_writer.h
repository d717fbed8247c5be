// ShardedSafetensorsWriter: writes a checkpoint's tensors as model-0000i-of-0000N.safetensors
// shards plus model.safetensors.index.json. The layout (shard, offset of every tensor) is planned
// up front from names, dtypes and shapes, so headers are final before any data is written, tensors
// may arrive in any order and nothing is buffered: a merge of a 600 GB model needs one tensor of
// memory. Headers are padded with spaces to 8-byte alignment; tensor data is contiguous.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/dtype.h"

namespace expertmesh {

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t ByteSize() const;
};

class ShardedSafetensorsWriter {
 public:
  ~ShardedSafetensorsWriter();
  ShardedSafetensorsWriter(const ShardedSafetensorsWriter&) = delete;
  ShardedSafetensorsWriter& operator=(const ShardedSafetensorsWriter&) = delete;

  // Plans shards in the order given: a new shard starts when the next tensor would push the
  // current one past `max_shard_bytes` of tensor data (a bigger tensor gets a shard of its own).
  // Creates the shard files (sized, headers written) in `directory`, which must exist.
  // INVALID_ARGUMENT for duplicate/empty names or negative dims.
  static absl::StatusOr<std::unique_ptr<ShardedSafetensorsWriter>> Create(
      const std::filesystem::path& directory, std::vector<TensorSpec> tensors, uint64_t max_shard_bytes,
      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

  // Writes one tensor's little-endian bytes; its size must match the spec. Each tensor once.
  absl::Status Write(const std::string& name, std::span<const std::byte> bytes);

  // Checks that every tensor was written, flushes and closes the shards and writes
  // model.safetensors.index.json.
  absl::Status Finish();

  const std::vector<std::string>& shard_file_names() const { return shard_file_names_; }
  uint64_t total_tensor_bytes() const { return total_bytes_; }

 private:
  struct Placement {
    TensorSpec spec;
    int shard = 0;
    uint64_t file_offset = 0;  // absolute position in the shard file
    bool written = false;
  };
  ShardedSafetensorsWriter() = default;

  std::filesystem::path directory_;
  std::map<std::string, Placement> placements_;
  std::vector<std::string> shard_file_names_;
  std::vector<int> shard_fds_;
  uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

// Shard file name i (0-based) of n: "model-00001-of-00003.safetensors".
std::string ShardFileName(int index, int count);

}  // namespace expertmesh
