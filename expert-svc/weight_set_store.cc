// WeightSetStore lifecycle: versions, budget and memory accounting, two-phase commit, drops, the
// default, request pinning and the janitor that frees drained sets (builds: weight_set_builds.cc).
#include "expert-svc/weight_set_store.h"

#include <algorithm>
#include <cstdio>
#include <unordered_set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/status_macros.h"
#include "engine/format/checkpoint.h"
#include "engine/merge/tensor_merger.h"
#include "expert-svc/weight_set_store_entry.h"

namespace expertmesh::expert_service {

absl::Status ValidateWeightSetName(const std::string& name, const char* what) {
  if (name.empty() || name.size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat(what, " name must have 1 to 128 characters, got '", name, "'"));
  }
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " name '", name, "' may only contain letters, digits, '.', '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

std::filesystem::path CanonicalPath(const std::filesystem::path& path) {
  std::error_code error;
  std::filesystem::path canonical = std::filesystem::weakly_canonical(std::filesystem::absolute(path), error);
  return error ? std::filesystem::absolute(path).lexically_normal() : canonical;
}

std::string MegaBytes(uint64_t bytes) { return absl::StrCat(static_cast<double>(bytes) / 1e6, " MB"); }

const char* WeightSetStateName(WeightSetState state) {
  switch (state) {
    case WeightSetState::kLoading: return "loading";
    case WeightSetState::kMerging: return "merging";
    case WeightSetState::kPrepared: return "prepared";
    case WeightSetState::kReady: return "ready";
    case WeightSetState::kRetired: return "retired";
    case WeightSetState::kDraining: return "draining";
  }
  return "?";
}

WeightSetStore::WeightSetStore(WeightSetStoreOptions options, std::unique_ptr<ExpertBackend> backend)
    : options_(std::move(options)), backend_(std::move(backend)), backend_name_(backend_->name()) {
  janitor_ = std::thread([this] { JanitorLoop(); });
}

WeightSetStore::~WeightSetStore() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    for (auto& [key, entry] : entries_) entry->stop.request_stop();
  }
  changed_.notify_all();
  janitor_.join();
}

void WeightSetStore::set_observer(WeightSetObserver observer) {
  std::lock_guard<std::mutex> lock(mutex_);
  observer_ = std::move(observer);
}

uint64_t WeightSetStore::NextVersionLocked(const std::string& name) const {
  uint64_t highest = 0;
  if (auto found = highest_version_.find(name); found != highest_version_.end()) highest = found->second;
  for (auto it = entries_.lower_bound({name, 0}); it != entries_.end() && it->first.first == name; ++it) {
    highest = std::max(highest, it->first.second);
  }
  return highest + 1;
}

absl::StatusOr<uint64_t> WeightSetStore::PickVersionLocked(const std::string& name, uint64_t requested) const {
  const uint64_t next = NextVersionLocked(name);
  if (requested == 0) return next;
  if (requested < next) {
    return absl::FailedPreconditionError(absl::StrCat("version ", requested, " of '", name, "' is not above its highest version ",
                                                      next - 1, " on shard ", options_.shard_name));
  }
  return requested;
}

absl::Status WeightSetStore::CheckBudgetLocked(uint64_t more_bytes, const std::string& what) const {
  if (options_.budget_bytes == 0) return absl::OkStatus();
  if (resident_bytes_ + reserved_bytes_ + more_bytes > options_.budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, " needs ", MegaBytes(more_bytes), " more; shard ", options_.shard_name, " holds ", MegaBytes(resident_bytes_),
        (reserved_bytes_ > 0 ? absl::StrCat(" (+", MegaBytes(reserved_bytes_), " reserved by builds)") : ""),
        " of its ", MegaBytes(options_.budget_bytes), " budget (--weight-budget-mb); drop a weight set first"));
  }
  return absl::OkStatus();
}

void WeightSetStore::RecomputeResidentLocked() {
  std::unordered_set<const Tensor*> seen;
  uint64_t bytes = 0;
  for (const auto& [key, entry] : entries_) {
    if (!entry->set) continue;
    bytes += entry->prebuilt_bytes;
    ForEachMatrix(entry->set->matrices(), [&](const std::shared_ptr<const Tensor>& tensor) {
      if (tensor && seen.insert(tensor.get()).second) bytes += TensorBytes(*tensor);
    });
  }
  resident_bytes_ = bytes;
}

std::map<const Tensor*, int> WeightSetStore::TensorUsersLocked() const {
  std::map<const Tensor*, int> users;
  for (const auto& [key, entry] : entries_) {
    if (!entry->set) continue;
    std::unordered_set<const Tensor*> mine;
    ForEachMatrix(entry->set->matrices(), [&](const std::shared_ptr<const Tensor>& tensor) {
      if (tensor && mine.insert(tensor.get()).second) ++users[tensor.get()];
    });
  }
  return users;
}

WeightSetStatus WeightSetStore::StatusLocked(const Entry& entry, const std::map<const Tensor*, int>* users) const {
  WeightSetStatus status;
  status.name = entry.name;
  status.version = entry.version;
  status.kind = entry.kind;
  status.state = entry.state;
  status.is_default = entry.state == WeightSetState::kReady && entry.name == default_name_;
  status.progress = entry.progress;
  status.source = entry.source;
  status.base_parent = entry.base_parent;
  if (entry.set) {
    status.requests_in_flight = entry.set->requests_in_flight();
    status.referenced_bytes = entry.set->referenced_bytes() + entry.prebuilt_bytes;
    std::map<const Tensor*, int> own_users;
    if (users == nullptr) {
      own_users = TensorUsersLocked();
      users = &own_users;
    }
    status.unique_bytes = entry.prebuilt_bytes;
    std::unordered_set<const Tensor*> mine;
    ForEachMatrix(entry.set->matrices(), [&](const std::shared_ptr<const Tensor>& tensor) {
      if (!tensor || !mine.insert(tensor.get()).second) return;
      auto found = users->find(tensor.get());
      if (found != users->end() && found->second == 1) status.unique_bytes += TensorBytes(*tensor);
    });
    status.shared_bytes = status.referenced_bytes - status.unique_bytes;
  }
  return status;
}

void WeightSetStore::CommitLocked(Entry& entry, std::vector<std::function<void()>>& notifications) {
  for (auto it = entries_.lower_bound({entry.name, 0}); it != entries_.end() && it->first.first == entry.name; ++it) {
    if (it->second.get() != &entry && it->second->state == WeightSetState::kReady) {
      it->second->state = WeightSetState::kRetired;
    }
  }
  entry.state = WeightSetState::kReady;
  // A version counts as used once committed: an aborted prepare leaves the next version as it was.
  uint64_t& highest = highest_version_[entry.name];
  highest = std::max(highest, entry.version);
  if (default_name_.empty()) default_name_ = entry.name;
  if (observer_.on_ready) {
    notifications.push_back([this, name = entry.name, version = entry.version,
                             bytes = entry.set->referenced_bytes() + entry.prebuilt_bytes] {
      observer_.on_ready(name, version, bytes);
    });
  }
}

absl::StatusOr<WeightSetStatus> WeightSetStore::Commit(const std::string& name, uint64_t version) {
  std::vector<std::function<void()>> notifications;
  absl::StatusOr<WeightSetStatus> result = absl::UnknownError("unset");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = entries_.find({name, version});
    if (found == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("nothing prepared as '", name, "' v", version, " on shard ", options_.shard_name));
    }
    Entry& entry = *found->second;
    if (entry.state == WeightSetState::kReady) return StatusLocked(entry, nullptr);
    if (entry.state != WeightSetState::kPrepared) {
      return absl::FailedPreconditionError(absl::StrCat("'", name, "' v", version, " is ", WeightSetStateName(entry.state),
                                                        ", not prepared, on shard ", options_.shard_name));
    }
    CommitLocked(entry, notifications);
    result = StatusLocked(entry, nullptr);
  }
  for (auto& notify : notifications) notify();
  return result;
}

absl::StatusOr<std::optional<WeightSetStatus>> WeightSetStore::Abort(const std::string& name, uint64_t version,
                                                                    std::optional<StoreClock::time_point> wait_until) {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    auto found = entries_.find({name, version});
    if (found == entries_.end()) return std::optional<WeightSetStatus>();
    Entry& entry = *found->second;
    if (entry.building()) {
      entry.stop.request_stop();  // the build fails CANCELLED and removes the entry
      std::optional<WeightSetStatus> status(StatusLocked(entry, nullptr));
      if (wait_until && !changed_.wait_until(lock, *wait_until, [&] { return !entries_.contains({name, version}); })) {
        return absl::DeadlineExceededError(absl::StrCat("'", name, "' v", version, " is still stopping its build on shard ",
                                                        options_.shard_name, "; it is removed when the build stops"));
      }
      return status;
    }
    if (entry.state != WeightSetState::kPrepared) {
      return absl::FailedPreconditionError(absl::StrCat("'", name, "' v", version, " is ", WeightSetStateName(entry.state),
                                                        " (committed) on shard ", options_.shard_name,
                                                        "; use DropWeightSet"));
    }
    WeightSetStatus status = StatusLocked(entry, nullptr);
    entries_.erase(found);
    RecomputeResidentLocked();
    status.state = WeightSetState::kDraining;
    changed_.notify_all();
    return std::optional<WeightSetStatus>(status);
  }
}

absl::StatusOr<std::vector<WeightSetStatus>> WeightSetStore::Drop(const std::string& name, uint64_t version,
                                                                  std::optional<StoreClock::time_point> wait_until) {
  std::vector<Key> waiting;
  std::vector<WeightSetStatus> dropped;
  std::unique_lock<std::mutex> lock(mutex_);
  std::vector<Entry*> matches;
  for (auto it = entries_.lower_bound({name, 0}); it != entries_.end() && it->first.first == name; ++it) {
    if (version == 0 || it->first.second == version) matches.push_back(it->second.get());
  }
  if (matches.empty()) {
    return absl::NotFoundError(absl::StrCat("no weight set '", name, "'", version ? absl::StrCat(" v", version) : "",
                                            " on shard ", options_.shard_name));
  }
  for (const Entry* entry : matches) {
    if (entry->state == WeightSetState::kReady && entry->name == default_name_) {
      return absl::FailedPreconditionError(absl::StrCat("'", name, "' v", entry->version, " is the default weight set of shard ",
                                                        options_.shard_name, "; SetDefault another one first"));
    }
  }
  for (Entry* entry : matches) {
    waiting.push_back({entry->name, entry->version});
    if (entry->building()) {
      entry->stop.request_stop();
      dropped.push_back(StatusLocked(*entry, nullptr));
    } else if (entry->state == WeightSetState::kPrepared) {
      dropped.push_back(StatusLocked(*entry, nullptr));
      dropped.back().state = WeightSetState::kDraining;
      entries_.erase({entry->name, entry->version});
    } else {
      entry->state = WeightSetState::kDraining;
      dropped.push_back(StatusLocked(*entry, nullptr));
    }
  }
  RecomputeResidentLocked();
  changed_.notify_all();
  if (wait_until) {
    const bool freed = changed_.wait_until(lock, *wait_until, [&] {
      return std::none_of(waiting.begin(), waiting.end(), [&](const Key& key) { return entries_.contains(key); });
    });
    if (!freed) {
      return absl::DeadlineExceededError(absl::StrCat("'", name, "' is draining on shard ", options_.shard_name,
                                                      ": requests still compute on it; it is freed when they end"));
    }
  }
  return dropped;
}

absl::Status WeightSetStore::SetDefault(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = entries_.lower_bound({name, 0}); it != entries_.end() && it->first.first == name; ++it) {
    if (it->second->state == WeightSetState::kReady) {
      default_name_ = name;
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(absl::StrCat("no ready weight set '", name, "' on shard ", options_.shard_name));
}

std::string WeightSetStore::default_name() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return default_name_;
}

StoreSnapshot WeightSetStore::List() const {
  std::lock_guard<std::mutex> lock(mutex_);
  StoreSnapshot snapshot;
  const std::map<const Tensor*, int> users = TensorUsersLocked();
  for (const auto& [key, entry] : entries_) snapshot.weight_sets.push_back(StatusLocked(*entry, &users));
  snapshot.default_name = default_name_;
  snapshot.resident_bytes = resident_bytes_;
  snapshot.budget_bytes = options_.budget_bytes;
  for (const auto& [name, highest] : highest_version_) snapshot.next_versions[name] = NextVersionLocked(name);
  for (const auto& [key, entry] : entries_) snapshot.next_versions[key.first] = NextVersionLocked(key.first);
  return snapshot;
}

absl::StatusOr<WeightSet::UseGuard> WeightSetStore::Acquire(const std::string& name, uint64_t version) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string& wanted = name.empty() ? default_name_ : name;
  if (wanted.empty()) return absl::NotFoundError(absl::StrCat("shard ", options_.shard_name, " has no default weight set"));
  std::vector<std::string> resident;
  const Entry* match = nullptr;
  for (auto it = entries_.lower_bound({wanted, 0}); it != entries_.end() && it->first.first == wanted; ++it) {
    const Entry& entry = *it->second;
    if (entry.building()) continue;
    resident.push_back(absl::StrCat(entry.version, " (", WeightSetStateName(entry.state), ")"));
    if (version == 0 ? entry.state == WeightSetState::kReady : entry.version == version) match = &entry;
  }
  if (resident.empty()) {
    return absl::NotFoundError(absl::StrCat("weight set '", wanted, "' is not resident on shard ", options_.shard_name,
                                            " (default: '", default_name_, "')"));
  }
  if (match == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("weight set '", wanted, "' has version(s) ",
                                                      absl::StrJoin(resident, ", "), " on shard ", options_.shard_name,
                                                      version == 0 ? std::string("; none is ready")
                                                                   : absl::StrCat("; the request pinned version ", version)));
  }
  if (match->state == WeightSetState::kPrepared) {
    return absl::FailedPreconditionError(absl::StrCat("weight set '", wanted, "' v", match->version,
                                                      " is prepared but not committed on shard ", options_.shard_name));
  }
  return WeightSet::UseGuard(match->set);
}

absl::Status WeightSetStore::InstallPrebuilt(const std::string& name, uint64_t version,
                                             std::unique_ptr<RoutedExperts> experts, uint64_t bytes) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateWeightSetName(name, "weight set"));
  std::vector<std::function<void()>> notifications;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    EXPERTMESH_ASSIGN_OR_RETURN(const uint64_t picked, PickVersionLocked(name, version));
    auto entry = std::make_unique<Entry>();
    entry->name = name;
    entry->version = picked;
    entry->source = "prebuilt";
    entry->prebuilt_bytes = bytes;
    WeightSetOrigin origin;
    origin.source = "prebuilt";
    entry->set = std::make_shared<const WeightSet>(name, picked, origin, ExpertMatrixMap(), std::move(experts));
    entry->state = WeightSetState::kPrepared;
    Entry& installed = *entry;
    entries_[{name, picked}] = std::move(entry);
    RecomputeResidentLocked();
    CommitLocked(installed, notifications);
  }
  for (auto& notify : notifications) notify();
  return absl::OkStatus();
}

void WeightSetStore::FreeDrainedLocked(std::vector<std::function<void()>>& notifications) {
  bool freed = false;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Entry& entry = *it->second;
    if (entry.state == WeightSetState::kDraining && entry.set && entry.set->requests_in_flight() == 0) {
      const std::string name = entry.name;
      it = entries_.erase(it);
      freed = true;
      const bool last = entries_.lower_bound({name, 0}) == entries_.end() || entries_.lower_bound({name, 0})->first.first != name;
      if (last && observer_.on_gone) notifications.push_back([this, name] { observer_.on_gone(name); });
    } else {
      ++it;
    }
  }
  if (freed) {
    RecomputeResidentLocked();
    changed_.notify_all();
  }
}

void WeightSetStore::JanitorLoop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    const bool draining = std::any_of(entries_.begin(), entries_.end(), [](const auto& item) {
      return item.second->state == WeightSetState::kDraining;
    });
    if (draining) {
      changed_.wait_for(lock, std::chrono::milliseconds(10));
    } else {
      changed_.wait(lock);
    }
    std::vector<std::function<void()>> notifications;
    FreeDrainedLocked(notifications);
    if (!notifications.empty()) {
      lock.unlock();
      for (auto& notify : notifications) notify();
      lock.lock();
    }
  }
}

}  // namespace expertmesh::expert_service
