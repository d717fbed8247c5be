// Internals shared by the WeightSetStore's two source files (lifecycle and builds): the entry
// kept per (name, version) and small helpers. Not part of the store's interface.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stop_token>
#include <string>

#include "absl/status/status.h"
#include "expert-svc/weight_set_store.h"

namespace expertmesh::expert_service {

using StoreClock = std::chrono::steady_clock;

// Names: 1 to 128 of [A-Za-z0-9._-]; INVALID_ARGUMENT naming `what` otherwise.
absl::Status ValidateWeightSetName(const std::string& name, const char* what);
// Absolute, normalized, symlinks resolved where they exist.
std::filesystem::path CanonicalPath(const std::filesystem::path& path);
// "4.7 MB"
std::string MegaBytes(uint64_t bytes);

// One (name, version): being built (set == null), prepared, ready, retired or draining.
struct WeightSetStore::Entry {
  std::string name;
  uint64_t version = 0;
  WeightSetKind kind = WeightSetKind::kParent;
  WeightSetState state = WeightSetState::kLoading;
  std::shared_ptr<const WeightSet> set;  // null while building
  std::stop_source stop;
  BuildProgress progress;
  std::string source;
  std::string base_parent;
  uint64_t reserved = 0;
  uint64_t prebuilt_bytes = 0;
  std::filesystem::path checkpoint_dir;  // parents
  std::string fingerprint;               // parents
  bool building() const { return set == nullptr; }
};

}  // namespace expertmesh::expert_service
