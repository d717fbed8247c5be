// SafetensorsFile: one read-only, memory-mapped .safetensors file (8-byte little-endian header
// length, JSON header of dtype/shape/data_offsets per tensor plus optional __metadata__, then the
// data section). Owns the mapping; hands out zero-copy byte views. ParseSafetensorsHeader is the
// validating header parser on plain bytes (the fuzz target drives it directly).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/dtype.h"

namespace expertmesh {

// One tensor of a safetensors header.
struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;      // as stored, e.g. "BF16", "I64"
  std::optional<DType> dtype;  // nullopt for dtypes the engine does not compute with
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte range within the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;  // 8 + header length: where the data section starts in the file
  uint64_t data_size = 0;    // bytes of the data section
  std::vector<SafetensorsEntry> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;

  const SafetensorsEntry* Find(std::string_view name) const;
};

// The safetensors format's own limit on the JSON header.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Parses and validates the header of a complete file held in `file_bytes`, reading only the
// header bytes: header length within the file, JSON syntax and types, known dtypes, shapes
// (non-negative, overflow-safe), byte sizes matching shape * dtype size, offsets inside the data
// section, no overlaps, gaps or trailing bytes. DATA_LOSS errors name `file_label` and the tensor.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const std::byte> file_bytes,
                                                         std::string_view file_label);

class SafetensorsFile {
 public:
  // Maps `path` and parses its header. NOT_FOUND / PERMISSION_DENIED for files that cannot be
  // opened, DATA_LOSS for malformed ones; every message names the file.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const SafetensorsEntry* Find(std::string_view name) const { return header_.Find(name); }
  // The stored bytes of `entry` (one of this file's), valid while the file is open.
  std::span<const std::byte> Bytes(const SafetensorsEntry& entry) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  const std::byte* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  SafetensorsHeader header_;
};

}  // namespace expertmesh
