// BlendCatalog: router-svc's record of what the expert fleet serves — per weight-set name its
// current version and kind, older versions still used by running requests, the default and the
// A/B traffic split — and the per-request choice. Each chosen request holds a pin on its
// (name, version) until it ends; a version that is no longer current (a newer one was committed,
// or the name was dropped) is handed to the retire callback once its last pin is released, so
// shards free old versions only when no request of this router uses them. Until the first
// Reset (shards not reachable yet) choices pass the request's blend through without a version.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "expertmesh/v1/admin_service.pb.h"
#include "router-svc/traffic_split.h"

namespace expertmesh::router_service {

// The weight set one request is served with. `pin` keeps the version in use until released.
struct BlendChoice {
  std::string blend;      // "" = the attention tier's default
  uint64_t version = 0;   // 0 = the attention tier resolves it
  std::shared_ptr<void> pin;
};

struct CatalogEntry {
  std::string name;
  uint64_t version = 0;
  v1::WeightSetKind kind = v1::WEIGHT_SET_KIND_UNSPECIFIED;
};

struct CatalogNameSnapshot {
  CatalogEntry current;
  int64_t requests_in_flight = 0;        // any version
  std::vector<uint64_t> retiring_versions;  // not current, still pinned
};

struct CatalogSnapshot {
  bool initialized = false;
  std::vector<CatalogNameSnapshot> names;  // sorted by name
  std::string default_name;
  std::map<std::string, double> split;
  uint64_t split_generation = 0;
};

class BlendCatalog {
 public:
  // Called (without the catalog's lock) for a retired version with no pins left.
  using RetireCallback = std::function<void(const std::string& name, uint64_t version)>;

  explicit BlendCatalog(RetireCallback on_retired = nullptr, uint64_t random_seed = std::random_device{}());

  // Replaces current versions and the default with what the shards serve; the split keeps the
  // names that still exist. With `retire_old`, versions that vanished or changed are retired (the
  // callback drops them once unpinned); without (a periodic resync that must not drop what another
  // router replica may still use) they are only no longer chosen.
  void Reset(const std::vector<CatalogEntry>& current, const std::string& default_name, bool retire_old = true);
  bool initialized() const;

  // A fleet commit of `entry`: it becomes current; the previous version of the name retires.
  void Commit(const CatalogEntry& entry);
  // DropBlend: the name is no longer served (every version retires). FAILED_PRECONDITION for the
  // default or a name in the split; NOT_FOUND if unknown.
  absl::Status Remove(const std::string& name);
  // Checks Remove would succeed, changing nothing.
  absl::Status CheckRemovable(const std::string& name) const;
  absl::Status SetDefault(const std::string& name);
  // Replaces the split; every name must be known (NOT_FOUND), weights as TrafficSplit::Create.
  absl::Status SetSplit(std::map<std::string, double> weights);

  // The choice for one request: an explicit `blend` (NOT_FOUND if unknown), else the split (sticky
  // per `ab_key`), else the default.
  absl::StatusOr<BlendChoice> Select(const std::string& blend, const std::string& ab_key);

  // Current version of `name` (0 when unknown).
  uint64_t CurrentVersion(const std::string& name) const;
  // Whether requests of this router run with (name, version) now.
  bool IsPinned(const std::string& name, uint64_t version) const;
  CatalogSnapshot Snapshot() const;

 private:
  struct Name {
    CatalogEntry current;
  };
  void Release(const std::string& name, uint64_t version);
  // `version` of `name` is no longer current: to the callback now if unpinned, else on release.
  void RetireLocked(const std::string& name, uint64_t version, std::vector<std::pair<std::string, uint64_t>>& idle);
  void Notify(const std::vector<std::pair<std::string, uint64_t>>& idle);

  RetireCallback on_retired_;
  mutable std::mutex mutex_;
  bool initialized_ = false;
  std::map<std::string, Name> names_;
  std::string default_name_;
  TrafficSplit split_;
  uint64_t split_generation_ = 0;
  std::map<std::pair<std::string, uint64_t>, int64_t> pins_;
  std::set<std::pair<std::string, uint64_t>> retiring_;  // not current any more, waiting for pins
  // Removed by DropBlend while the shards still serve them: a resync must not bring them back.
  std::set<std::pair<std::string, uint64_t>> removed_;
  std::mt19937_64 random_;
};

}  // namespace expertmesh::router_service
