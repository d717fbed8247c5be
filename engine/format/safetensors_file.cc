// SafetensorsFile and ParseSafetensorsHeader: mmap, header validation, byte views.
#include "engine/format/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status_macros.h"
#include "nlohmann/json.hpp"

namespace expertmesh {
namespace {

using Json = nlohmann::json;

// Largest accepted dimension; keeps every later product of a few dimensions inside int64.
constexpr uint64_t kMaxDimension = uint64_t{1} << 62;

// Element sizes of every dtype the safetensors format defines (so that tensors the engine does
// not read are still validated); nullopt for unknown names.
std::optional<uint64_t> SafetensorsDTypeSize(std::string_view name) {
  static const std::pair<std::string_view, uint64_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2},
      {"F16", 2},  {"BF16", 2}, {"I32", 4}, {"U32", 4},    {"F32", 4},     {"F64", 8}, {"I64", 8},
      {"U64", 8}};
  for (const auto& [known, size] : kSizes) {
    if (known == name) return size;
  }
  return std::nullopt;
}

// A short description of a JSON value for error messages. Containers are not serialized: a
// deeply nested one would make the (recursive) serializer overflow the stack.
std::string Describe(const Json& value) {
  if (value.is_array()) return absl::StrCat("an array of ", value.size());
  if (value.is_object()) return absl::StrCat("an object of ", value.size(), " fields");
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return absl::StrCat(value.type_name(), " ", text);
}

absl::Status HeaderError(absl::string_view file, absl::string_view problem) {
  return absl::DataLossError(absl::StrCat(file, ": safetensors header ", problem));
}

absl::Status TensorError(absl::string_view file, absl::string_view tensor, absl::string_view problem) {
  return absl::DataLossError(absl::StrCat(file, ": tensor '", tensor, "': ", problem));
}

absl::StatusOr<SafetensorsEntry> ParseEntry(absl::string_view file, const std::string& name, const Json& value,
                                            uint64_t data_size) {
  if (!value.is_object()) return TensorError(file, name, absl::StrCat("entry must be an object, got ", Describe(value)));
  SafetensorsEntry entry;
  entry.name = name;
  if (name.empty()) return TensorError(file, name, "empty tensor name");
  const auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) return TensorError(file, name, "'dtype' must be a string");
  entry.dtype_name = dtype->get<std::string>();
  const std::optional<uint64_t> element_size = SafetensorsDTypeSize(entry.dtype_name);
  if (!element_size) return TensorError(file, name, absl::StrCat("unknown dtype '", entry.dtype_name, "'"));
  entry.dtype = ParseDTypeName(entry.dtype_name);

  const auto shape = value.find("shape");
  if (shape == value.end() || !shape->is_array()) return TensorError(file, name, "'shape' must be an array");
  uint64_t elements = 1;
  for (const Json& dimension : *shape) {
    if (dimension.is_number_integer() && !dimension.is_number_unsigned()) {
      return TensorError(file, name, absl::StrCat("negative dimension ", Describe(dimension), " in shape"));
    }
    if (!dimension.is_number_unsigned()) {
      return TensorError(file, name, absl::StrCat("shape dimension ", Describe(dimension), " is not an integer"));
    }
    const uint64_t size = dimension.get<uint64_t>();
    if (size > kMaxDimension) return TensorError(file, name, absl::StrCat("shape dimension ", size, " is too large"));
    if (__builtin_mul_overflow(elements, size, &elements)) {
      return TensorError(file, name, "shape's element count overflows 64 bits");
    }
    entry.shape.push_back(static_cast<int64_t>(size));
  }
  uint64_t expected_bytes = 0;
  if (__builtin_mul_overflow(elements, *element_size, &expected_bytes)) {
    return TensorError(file, name, "shape's byte size overflows 64 bits");
  }

  const auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    return TensorError(file, name, absl::StrCat("'data_offsets' must be [begin, end] of non-negative integers, got ",
                                                offsets == value.end() ? "nothing" : Describe(*offsets)));
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.end < entry.begin) {
    return TensorError(file, name, absl::StrCat("data_offsets end ", entry.end, " is before begin ", entry.begin));
  }
  if (entry.end > data_size) {
    return TensorError(file, name, absl::StrCat("data_offsets [", entry.begin, ", ", entry.end,
                                                ") reach beyond the data section of ", data_size,
                                                " bytes (truncated file?)"));
  }
  if (entry.end - entry.begin != expected_bytes) {
    return TensorError(file, name, absl::StrCat("holds ", entry.end - entry.begin, " bytes but shape [",
                                                absl::StrJoin(entry.shape, ", "), "] of ", entry.dtype_name, " needs ",
                                                expected_bytes));
  }
  return entry;
}

// Tensors must tile the data section exactly, as the safetensors format requires.
absl::Status CheckTiling(absl::string_view file, const std::vector<SafetensorsEntry>& tensors, uint64_t data_size) {
  std::vector<const SafetensorsEntry*> by_offset;
  by_offset.reserve(tensors.size());
  for (const SafetensorsEntry& entry : tensors) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* entry : by_offset) {
    if (entry->begin < covered) {
      return TensorError(file, entry->name, absl::StrCat("bytes [", entry->begin, ", ", entry->end,
                                                         ") overlap tensor '", previous->name, "' [", previous->begin,
                                                         ", ", previous->end, ")"));
    }
    if (entry->begin > covered) {
      return TensorError(file, entry->name, absl::StrCat("starts at byte ", entry->begin, " leaving a gap after byte ",
                                                         covered, " (data must be contiguous)"));
    }
    covered = entry->end;
    previous = entry;
  }
  if (covered != data_size) {
    return HeaderError(file, absl::StrCat("describes ", covered, " data bytes but the file holds ", data_size,
                                          " after the header"));
  }
  return absl::OkStatus();
}

}  // namespace

const SafetensorsEntry* SafetensorsHeader::Find(std::string_view name) const {
  auto it = std::lower_bound(tensors.begin(), tensors.end(), name,
                             [](const SafetensorsEntry& entry, std::string_view key) { return entry.name < key; });
  return it != tensors.end() && it->name == name ? &*it : nullptr;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const std::byte> file_bytes,
                                                         std::string_view file_name) {
  const std::string file_label(file_name);
  if (file_bytes.size() < 8) {
    return HeaderError(file_label, absl::StrCat("missing: the file has ", file_bytes.size(),
                                                " bytes, fewer than the 8-byte header length"));
  }
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | static_cast<uint8_t>(file_bytes[i]);
  if (header_length > kMaxSafetensorsHeaderBytes) {
    return HeaderError(file_label, absl::StrCat("length ", header_length, " exceeds the format's limit of ",
                                                kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_length > file_bytes.size() - 8) {
    return HeaderError(file_label, absl::StrCat("length ", header_length, " reaches beyond the file's ",
                                                file_bytes.size(), " bytes (truncated file?)"));
  }
  const char* text = reinterpret_cast<const char*>(file_bytes.data() + 8);
  Json root;
  try {
    root = Json::parse(text, text + header_length);
  } catch (const Json::exception& error) {
    return HeaderError(file_label, absl::StrCat("is not valid JSON: ", error.what()));
  }
  if (!root.is_object()) return HeaderError(file_label, "must be a JSON object");
  SafetensorsHeader header;
  header.data_offset = 8 + header_length;
  header.data_size = file_bytes.size() - header.data_offset;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return HeaderError(file_label, "__metadata__ must be an object");
      for (auto item = it.value().begin(); item != it.value().end(); ++item) {
        if (!item.value().is_string()) {
          return HeaderError(file_label, absl::StrCat("__metadata__ value of '", item.key(), "' must be a string"));
        }
        header.metadata[item.key()] = item.value().get<std::string>();
      }
      continue;
    }
    EXPERTMESH_ASSIGN_OR_RETURN(SafetensorsEntry entry, ParseEntry(file_label, it.key(), it.value(), header.data_size));
    header.tensors.push_back(std::move(entry));
  }
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.name < b.name; });
  EXPERTMESH_RETURN_IF_ERROR(CheckTiling(file_label, header.tensors, header.data_size));
  return header;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::filesystem::path& path) {
  const std::string label = path.string();
  const int descriptor = ::open(label.c_str(), O_RDONLY | O_CLOEXEC);
  if (descriptor < 0) {
    const int error = errno;
    const std::string message = absl::StrCat("cannot open ", label, ": ", std::strerror(error));
    if (error == ENOENT) return absl::NotFoundError(message);
    if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(message);
    return absl::UnavailableError(message);
  }
  struct stat info {};
  if (::fstat(descriptor, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(descriptor);
    return absl::DataLossError(absl::StrCat(label, " is not a regular file"));
  }
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->mapping_size_ = static_cast<size_t>(info.st_size);
  if (file->mapping_size_ > 0) {
    void* mapping = ::mmap(nullptr, file->mapping_size_, PROT_READ, MAP_PRIVATE, descriptor, 0);
    if (mapping == MAP_FAILED) {
      const int error = errno;
      ::close(descriptor);
      return absl::UnavailableError(absl::StrCat("cannot map ", label, ": ", std::strerror(error)));
    }
    file->mapping_ = static_cast<const std::byte*>(mapping);
  }
  ::close(descriptor);  // the mapping stays valid
  EXPERTMESH_ASSIGN_OR_RETURN(file->header_,
                              ParseSafetensorsHeader(std::span(file->mapping_, file->mapping_size_), label));
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(const_cast<std::byte*>(mapping_), mapping_size_);
}

std::span<const std::byte> SafetensorsFile::Bytes(const SafetensorsEntry& entry) const {
  return std::span(mapping_ + header_.data_offset + entry.begin, entry.end - entry.begin);
}

}  // namespace expertmesh
