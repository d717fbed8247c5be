// ShardedSafetensorsWriter: shard planning, header serialization (ordered JSON, space padding),
// positioned writes with pwrite, and the HF index file.
#include "engine/merge/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/status_macros.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

using Json = nlohmann::ordered_json;

absl::Status WriteAll(int fd, const void* data, uint64_t size, uint64_t offset, const std::string& what) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written = ::pwrite(fd, bytes, size, static_cast<off_t>(offset));
    if (written < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("writing ", what, ": ", std::strerror(errno)));
    }
    bytes += written;
    size -= static_cast<uint64_t>(written);
    offset += static_cast<uint64_t>(written);
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t TensorSpec::ByteSize() const {
  uint64_t count = 1;
  for (int64_t dim : shape) count *= static_cast<uint64_t>(dim);
  return count * DTypeSize(dtype);
}

std::string ShardFileName(int index, int count) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, count);
}

ShardedSafetensorsWriter::~ShardedSafetensorsWriter() {
  for (int fd : shard_fds_) {
    if (fd >= 0) ::close(fd);
  }
}

absl::StatusOr<std::unique_ptr<ShardedSafetensorsWriter>> ShardedSafetensorsWriter::Create(
    const std::filesystem::path& directory, std::vector<TensorSpec> tensors, uint64_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata) {
  if (max_shard_bytes == 0) return absl::InvalidArgumentError("max shard size must be > 0");
  std::unique_ptr<ShardedSafetensorsWriter> writer(new ShardedSafetensorsWriter());
  writer->directory_ = directory;

  // Plan: shard index and data offset of every tensor.
  struct Planned {
    const TensorSpec* spec;
    uint64_t data_offset;
  };
  std::vector<std::vector<Planned>> shards;
  uint64_t shard_bytes = 0;
  for (const TensorSpec& spec : tensors) {
    if (spec.name.empty()) return absl::InvalidArgumentError("a tensor has an empty name");
    if (spec.name == "__metadata__") return absl::InvalidArgumentError("a tensor cannot be named __metadata__");
    for (int64_t dim : spec.shape) {
      if (dim < 0) return absl::InvalidArgumentError(absl::StrCat("tensor ", spec.name, " has a negative dimension"));
    }
    if (writer->placements_.count(spec.name)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", spec.name, " appears twice"));
    }
    const uint64_t size = spec.ByteSize();
    if (shards.empty() || (shard_bytes > 0 && shard_bytes + size > max_shard_bytes)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back({&spec, shard_bytes});
    shard_bytes += size;
    writer->total_bytes_ += size;
    writer->placements_[spec.name] = Placement{spec, static_cast<int>(shards.size()) - 1, 0, false};
  }
  if (shards.empty()) shards.emplace_back();  // an empty checkpoint is still one (empty) file

  const int count = static_cast<int>(shards.size());
  for (int index = 0; index < count; ++index) {
    Json header;
    if (!metadata.empty()) {
      header["__metadata__"] = Json::object();
      for (const auto& [key, value] : metadata) header["__metadata__"][key] = value;
    }
    uint64_t data_size = 0;
    for (const Planned& planned : shards[index]) {
      const uint64_t size = planned.spec->ByteSize();
      header[planned.spec->name] = {{"dtype", std::string(DTypeName(planned.spec->dtype))},
                                    {"shape", planned.spec->shape},
                                    {"data_offsets", {planned.data_offset, planned.data_offset + size}}};
      data_size = planned.data_offset + size;
    }
    std::string header_text = header.is_null() ? "{}" : header.dump();
    header_text.append((8 - header_text.size() % 8) % 8, ' ');
    const uint64_t data_start = 8 + header_text.size();
    for (const Planned& planned : shards[index]) {
      writer->placements_[planned.spec->name].file_offset = data_start + planned.data_offset;
    }

    const std::string file_name = ShardFileName(index, count);
    const std::filesystem::path path = directory / file_name;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path.string(), ": ", std::strerror(errno)));
    writer->shard_fds_.push_back(fd);
    writer->shard_file_names_.push_back(file_name);
    if (::ftruncate(fd, static_cast<off_t>(data_start + data_size)) != 0) {
      return absl::InternalError(absl::StrCat("cannot size ", path.string(), ": ", std::strerror(errno)));
    }
    uint8_t length[8];
    const uint64_t header_length = header_text.size();
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(header_length >> (8 * i));
    EXPERTMESH_RETURN_IF_ERROR(WriteAll(fd, length, 8, 0, path.string()));
    EXPERTMESH_RETURN_IF_ERROR(WriteAll(fd, header_text.data(), header_text.size(), 8, path.string()));
  }
  return writer;
}

absl::Status ShardedSafetensorsWriter::Write(const std::string& name, std::span<const std::byte> bytes) {
  if (finished_) return absl::FailedPreconditionError("writer already finished");
  auto found = placements_.find(name);
  if (found == placements_.end()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is not in the planned checkpoint"));
  }
  Placement& placement = found->second;
  if (placement.written) return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " written twice"));
  if (bytes.size() != placement.spec.ByteSize()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": ", bytes.size(), " bytes, its ",
                                                   std::string(DTypeName(placement.spec.dtype)), " shape needs ",
                                                   placement.spec.ByteSize()));
  }
  EXPERTMESH_RETURN_IF_ERROR(WriteAll(shard_fds_[placement.shard], bytes.data(), bytes.size(), placement.file_offset,
                                      (directory_ / shard_file_names_[placement.shard]).string()));
  placement.written = true;
  return absl::OkStatus();
}

absl::Status ShardedSafetensorsWriter::Finish() {
  if (finished_) return absl::FailedPreconditionError("writer already finished");
  for (const auto& [name, placement] : placements_) {
    if (!placement.written) return absl::FailedPreconditionError(absl::StrCat("tensor ", name, " was never written"));
  }
  for (size_t i = 0; i < shard_fds_.size(); ++i) {
    const int fd = shard_fds_[i];
    shard_fds_[i] = -1;
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
      return absl::InternalError(absl::StrCat("closing ", shard_file_names_[i], ": ", std::strerror(errno)));
    }
  }
  Json index;
  index["metadata"] = {{"total_size", total_bytes_}};
  index["weight_map"] = Json::object();
  for (const auto& [name, placement] : placements_) {  // sorted by name, like transformers writes it
    index["weight_map"][name] = shard_file_names_[placement.shard];
  }
  const std::filesystem::path path = directory_ / "model.safetensors.index.json";
  std::ofstream out(path);
  out << index.dump(2) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing ", path.string(), " failed"));
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace expertmesh
