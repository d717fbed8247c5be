// Typed, exception-free access to tokenizer.json fields: every getter checks the JSON type and
// returns INVALID_ARGUMENT naming the field path ("pre_tokenizer.pretokenizers[2].pattern") on
// a missing or mistyped value. Internal to engine/tokenizer.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace expertmesh::tokenizer_json {

using Json = nlohmann::json;

// This Abseil build has its own string_view type; std::string_view must be bridged explicitly.
inline absl::string_view AsAbsl(std::string_view text) { return absl::string_view(text.data(), text.size()); }

inline absl::Status FieldError(std::string_view path, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", AsAbsl(path), ": ", AsAbsl(message)));
}

inline std::string Child(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(AsAbsl(path), ".", AsAbsl(key));
}

inline std::string Element(std::string_view path, size_t index) { return absl::StrCat(AsAbsl(path), "[", index, "]"); }

// The member `key` of `object`, or nullptr when absent or JSON null (object must be an object).
inline const Json* FindMember(const Json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(std::string(key));
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

inline absl::Status RequireObject(const Json& value, std::string_view path) {
  if (!value.is_object()) return FieldError(path, "must be an object");
  return absl::OkStatus();
}

inline absl::StatusOr<bool> OptionalBool(const Json& object, std::string_view key, bool default_value,
                                         std::string_view path) {
  const Json* member = FindMember(object, key);
  if (member == nullptr) return default_value;
  if (!member->is_boolean()) return FieldError(Child(path, key), "must be true or false");
  return member->get<bool>();
}

inline absl::StatusOr<std::string> RequiredString(const Json& object, std::string_view key,
                                                  std::string_view path) {
  const Json* member = FindMember(object, key);
  if (member == nullptr) return FieldError(Child(path, key), "is missing");
  if (!member->is_string()) return FieldError(Child(path, key), "must be a string");
  return member->get<std::string>();
}

// The "type" tag of a component object.
inline absl::StatusOr<std::string> TypeOf(const Json& object, std::string_view path) {
  if (!object.is_object()) return FieldError(path, "must be an object");
  return RequiredString(object, "type", path);
}

}  // namespace expertmesh::tokenizer_json
