// libFuzzer target: ParseSafetensorsHeader on arbitrary file bytes. Besides crashes and sanitizer
// reports, it traps when an accepted header breaks the invariants readers rely on (entries inside
// the data section, byte sizes matching shapes, no overlaps).
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/format/safetensors_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto bytes = std::as_bytes(std::span(data, size));
  absl::StatusOr<expertmesh::SafetensorsHeader> header = expertmesh::ParseSafetensorsHeader(bytes, "fuzz.safetensors");
  if (!header.ok()) return 0;
  if (header->data_offset + header->data_size != size) __builtin_trap();
  uint64_t covered = 0;
  for (const expertmesh::SafetensorsEntry& entry : header->tensors) {
    if (entry.begin > entry.end || entry.end > header->data_size) __builtin_trap();
    uint64_t elements = 1;
    for (int64_t dimension : entry.shape) {
      if (dimension < 0) __builtin_trap();
      elements *= static_cast<uint64_t>(dimension);  // cannot overflow: the parser checked
    }
    if (entry.dtype && elements * expertmesh::DTypeSize(*entry.dtype) != entry.end - entry.begin) __builtin_trap();
    covered += entry.end - entry.begin;
    if (header->Find(entry.name) != &entry) __builtin_trap();
  }
  if (covered != header->data_size) __builtin_trap();  // contiguous, no overlap
  return 0;
}
