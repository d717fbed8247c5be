// BlendCatalog: current versions, pins, retirement, default and split.
#include "router-svc/blend_catalog.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace expertmesh::router_service {

BlendCatalog::BlendCatalog(RetireCallback on_retired, uint64_t random_seed)
    : on_retired_(std::move(on_retired)), random_(random_seed) {}

bool BlendCatalog::initialized() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return initialized_;
}

void BlendCatalog::RetireLocked(const std::string& name, uint64_t version,
                                std::vector<std::pair<std::string, uint64_t>>& idle) {
  if (pins_.contains({name, version})) {
    retiring_.insert({name, version});
  } else {
    idle.emplace_back(name, version);
  }
}

void BlendCatalog::Notify(const std::vector<std::pair<std::string, uint64_t>>& idle) {
  if (!on_retired_) return;
  for (const auto& [name, version] : idle) on_retired_(name, version);
}

void BlendCatalog::Reset(const std::vector<CatalogEntry>& current, const std::string& default_name, bool retire_old) {
  std::vector<std::pair<std::string, uint64_t>> idle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::map<std::string, Name> fresh;
    std::set<std::pair<std::string, uint64_t>> still_removed;
    for (const CatalogEntry& entry : current) {
      if (removed_.contains({entry.name, entry.version})) {
        still_removed.insert({entry.name, entry.version});  // dropped here; the shards catch up
      } else {
        fresh[entry.name] = Name{entry};
      }
    }
    removed_ = std::move(still_removed);
    for (const auto& [name, old] : names_) {
      auto found = fresh.find(name);
      if (retire_old && (found == fresh.end() || found->second.current.version != old.current.version)) {
        RetireLocked(name, old.current.version, idle);
      }
    }
    for (const auto& [name, entry] : fresh) retiring_.erase({name, entry.current.version});
    names_ = std::move(fresh);
    default_name_ = names_.contains(default_name) ? default_name : "";
    std::map<std::string, double> weights = split_.weights();
    const size_t before = weights.size();
    std::erase_if(weights, [&](const auto& item) { return !names_.contains(item.first); });
    if (weights.size() != before) {
      auto split = TrafficSplit::Create(weights);
      split_ = split.ok() ? *std::move(split) : TrafficSplit();
      ++split_generation_;
    }
    initialized_ = true;
  }
  Notify(idle);
}

void BlendCatalog::Commit(const CatalogEntry& entry) {
  std::vector<std::pair<std::string, uint64_t>> idle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = names_.find(entry.name);
    if (found != names_.end() && found->second.current.version != entry.version) {
      RetireLocked(entry.name, found->second.current.version, idle);
    }
    names_[entry.name] = Name{entry};
    retiring_.erase({entry.name, entry.version});
    if (default_name_.empty()) default_name_ = entry.name;
    initialized_ = true;
  }
  Notify(idle);
}

absl::Status BlendCatalog::CheckRemovable(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!names_.contains(name)) return absl::NotFoundError(absl::StrCat("no weight set '", name, "' is served"));
  if (name == default_name_) {
    return absl::FailedPreconditionError(absl::StrCat("'", name, "' is the default weight set; SetDefault another one first"));
  }
  if (split_.weight(name) > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", name, "' is in the traffic split; remove it from the split first"));
  }
  return absl::OkStatus();
}

absl::Status BlendCatalog::Remove(const std::string& name) {
  if (absl::Status removable = CheckRemovable(name); !removable.ok()) return removable;
  std::vector<std::pair<std::string, uint64_t>> idle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = names_.find(name);
    if (found == names_.end()) return absl::NotFoundError(absl::StrCat("no weight set '", name, "' is served"));
    RetireLocked(name, found->second.current.version, idle);
    removed_.insert({name, found->second.current.version});
    names_.erase(found);
  }
  Notify(idle);
  return absl::OkStatus();
}

absl::Status BlendCatalog::SetDefault(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!names_.contains(name)) return absl::NotFoundError(absl::StrCat("no weight set '", name, "' is served"));
  default_name_ = name;
  return absl::OkStatus();
}

absl::Status BlendCatalog::SetSplit(std::map<std::string, double> weights) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [name, weight] : weights) {
    if (!names_.contains(name)) {
      return absl::NotFoundError(absl::StrCat("traffic split names '", name, "', which is not served"));
    }
  }
  absl::StatusOr<TrafficSplit> split = TrafficSplit::Create(std::move(weights));
  if (!split.ok()) return split.status();
  split_ = *std::move(split);
  ++split_generation_;
  return absl::OkStatus();
}

absl::StatusOr<BlendChoice> BlendCatalog::Select(const std::string& blend, const std::string& ab_key) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!initialized_) return BlendChoice{blend, 0, nullptr};  // the attention tier resolves it
  std::string name = blend;
  if (name.empty()) name = split_.Pick(ab_key, random_);
  if (name.empty()) name = default_name_;
  if (name.empty()) return BlendChoice{"", 0, nullptr};
  auto found = names_.find(name);
  if (found == names_.end()) {
    std::vector<std::string> served;
    for (const auto& [known, entry] : names_) served.push_back(known);
    return absl::NotFoundError(
        absl::StrCat("blend '", name, "' is not served (served: ", absl::StrJoin(served, ", "), ")"));
  }
  const uint64_t version = found->second.current.version;
  ++pins_[{name, version}];
  std::shared_ptr<void> pin(static_cast<void*>(this), [this, name, version](void*) { Release(name, version); });
  return BlendChoice{name, version, std::move(pin)};
}

void BlendCatalog::Release(const std::string& name, uint64_t version) {
  std::vector<std::pair<std::string, uint64_t>> idle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = pins_.find({name, version});
    if (found == pins_.end()) return;
    if (--found->second > 0) return;
    pins_.erase(found);
    if (retiring_.erase({name, version}) > 0) idle.emplace_back(name, version);
  }
  Notify(idle);
}

uint64_t BlendCatalog::CurrentVersion(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = names_.find(name);
  return found == names_.end() ? 0 : found->second.current.version;
}

bool BlendCatalog::IsPinned(const std::string& name, uint64_t version) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pins_.contains({name, version});
}

CatalogSnapshot BlendCatalog::Snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  CatalogSnapshot snapshot;
  snapshot.initialized = initialized_;
  snapshot.default_name = default_name_;
  snapshot.split = split_.weights();
  snapshot.split_generation = split_generation_;
  for (const auto& [name, entry] : names_) {
    CatalogNameSnapshot item;
    item.current = entry.current;
    for (auto it = pins_.lower_bound({name, 0}); it != pins_.end() && it->first.first == name; ++it) {
      item.requests_in_flight += it->second;
    }
    for (auto it = retiring_.lower_bound({name, 0}); it != retiring_.end() && it->first == name; ++it) {
      item.retiring_versions.push_back(it->second);
    }
    snapshot.names.push_back(std::move(item));
  }
  return snapshot;
}

}  // namespace expertmesh::router_service
