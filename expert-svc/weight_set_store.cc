// WeightSetStore: builds (parents, blends) with progress/cancel/budget, two-phase commit,
// versions, the default, request pinning and the janitor that frees drained sets.
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

namespace expertmesh::expert_service {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status ValidateName(const std::string& name, const char* what) {
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

std::filesystem::path Canonical(const std::filesystem::path& path) {
  std::error_code error;
  std::filesystem::path canonical = std::filesystem::weakly_canonical(std::filesystem::absolute(path), error);
  return error ? std::filesystem::absolute(path).lexically_normal() : canonical;
}

std::string MegaBytes(uint64_t bytes) { return absl::StrCat(static_cast<double>(bytes) / 1e6, " MB"); }

}  // namespace

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

absl::StatusOr<WeightSetStatus> WeightSetStore::RunBuild(
    Entry* entry, bool commit, std::stop_token caller_stop,
    const std::function<absl::StatusOr<std::pair<ExpertMatrixMap, WeightSetOrigin>>(const BuildControl&)>& build) {
  const auto started = Clock::now();
  std::stop_source entry_stop = entry->stop;
  std::stop_callback forward(caller_stop, [entry_stop]() mutable { entry_stop.request_stop(); });
  BuildControl control;
  control.stop = entry_stop.get_token();
  const std::string what = absl::StrCat("weight set '", entry->name, "' v", entry->version);
  auto last_log = Clock::now() - std::chrono::seconds(2);  // the first line at once
  control.progress = [this, entry, what, last_log](const BuildProgress& progress) mutable {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      entry->progress = progress;
    }
    const auto now = Clock::now();
    if (options_.log_progress && (progress.tensors_done == progress.tensors_total || now - last_log > std::chrono::seconds(1))) {
      last_log = now;
      std::fprintf(stderr, "expert-svc %s: %s: %s\n", options_.shard_name.c_str(), what.c_str(), progress.ToString().c_str());
    }
  };
  control.reserve = [this, entry, what](uint64_t bytes) -> absl::Status {
    std::lock_guard<std::mutex> lock(mutex_);
    EXPERTMESH_RETURN_IF_ERROR(CheckBudgetLocked(bytes, what));
    entry->reserved += bytes;
    reserved_bytes_ += bytes;
    return absl::OkStatus();
  };
  absl::StatusOr<std::pair<ExpertMatrixMap, WeightSetOrigin>> built = build(control);
  std::shared_ptr<WeightSet> set;
  absl::Status experts = absl::OkStatus();
  if (built.ok()) {
    // The backend's experts refer to the set's own matrices: build them once those have moved in.
    set = std::make_shared<WeightSet>(entry->name, entry->version, built->second, std::move(built->first), nullptr);
    absl::StatusOr<std::unique_ptr<RoutedExperts>> computed =
        backend_->Build(set->matrices(), options_.model.hidden_size, options_.model.moe_intermediate_size);
    if (computed.ok()) {
      set->AttachExperts(*std::move(computed));
    } else {
      experts = computed.status();
    }
  }
  std::vector<std::function<void()>> notifications;
  absl::StatusOr<WeightSetStatus> result = absl::UnknownError("unset");
  {
    std::lock_guard<std::mutex> lock(mutex_);
    reserved_bytes_ -= entry->reserved;
    entry->reserved = 0;
    absl::Status failure = !built.ok() ? built.status() : experts;
    if (failure.ok() && entry->stop.stop_requested()) failure = absl::CancelledError(absl::StrCat(what, " was aborted"));
    const std::string name = entry->name;
    if (!failure.ok()) {
      entries_.erase({entry->name, entry->version});
      result = absl::Status(failure.code(), absl::StrCat(what, " on shard ", options_.shard_name, ": ", failure.message()));
    } else {
      entry->set = std::move(set);
      entry->state = WeightSetState::kPrepared;
      uint64_t& highest = highest_version_[entry->name];
      highest = std::max(highest, entry->version);
      RecomputeResidentLocked();
      if (commit) CommitLocked(*entry, notifications);
      result = StatusLocked(*entry, nullptr);
    }
    if (observer_.on_build) {
      const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
      notifications.push_back([this, name, ok = failure.ok(), seconds] { observer_.on_build(name, ok, seconds); });
    }
  }
  changed_.notify_all();
  for (auto& notify : notifications) notify();
  return result;
}

absl::StatusOr<WeightSetStatus> WeightSetStore::LoadParent(const std::string& name,
                                                           const std::filesystem::path& checkpoint_dir,
                                                           uint64_t version, bool commit, std::stop_token stop) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateName(name, "parent"));
  if (checkpoint_dir.empty()) return absl::InvalidArgumentError("parent checkpoint directory is empty");
  const std::filesystem::path directory = Canonical(checkpoint_dir);
  absl::StatusOr<std::unique_ptr<Checkpoint>> opened = Checkpoint::Open(directory, ShardTensorFilter(options_.hosted));
  if (!opened.ok()) {
    return absl::Status(opened.status().code(), absl::StrCat("parent '", name, "': ", opened.status().message()));
  }
  std::shared_ptr<const Checkpoint> checkpoint = *std::move(opened);
  EXPERTMESH_RETURN_IF_ERROR(
      CheckExpertLayout(checkpoint->config(), options_.model, absl::StrCat("parent '", name, "' (", directory.string(), ")")));
  for (const std::string& tensor : ShardExpertTensorNames(options_.hosted)) {
    if (checkpoint->Find(tensor) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("parent '", name, "' (", directory.string(), ") has no tensor ", tensor));
    }
  }
  const uint64_t bytes = HostedMatrixBytes(checkpoint->config(), options_.hosted);
  Entry* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::UnavailableError("the expert shard is stopping");
    for (auto it = entries_.lower_bound({name, 0}); it != entries_.end() && it->first.first == name; ++it) {
      if (it->second->kind != WeightSetKind::kParent) {
        return absl::InvalidArgumentError(absl::StrCat("'", name, "' is a blend on shard ", options_.shard_name,
                                                       "; a parent needs another name"));
      }
    }
    EXPERTMESH_ASSIGN_OR_RETURN(const uint64_t picked, PickVersionLocked(name, version));
    EXPERTMESH_RETURN_IF_ERROR(CheckBudgetLocked(bytes, absl::StrCat("parent '", name, "'")));
    auto created = std::make_unique<Entry>();
    created->name = name;
    created->version = picked;
    created->kind = WeightSetKind::kParent;
    created->state = WeightSetState::kLoading;
    created->source = directory.string();
    created->checkpoint_dir = directory;
    created->fingerprint = CheckpointFingerprint(*checkpoint);
    created->progress.bytes_total = bytes;
    entry = created.get();
    entries_[{name, picked}] = std::move(created);
  }
  return RunBuild(entry, commit, stop, [this, checkpoint, directory](const BuildControl& control)
                                           -> absl::StatusOr<std::pair<ExpertMatrixMap, WeightSetOrigin>> {
    EXPERTMESH_ASSIGN_OR_RETURN(ExpertMatrixMap matrices, LoadParentMatrices(*checkpoint, options_.hosted, control));
    WeightSetOrigin origin;
    origin.kind = WeightSetKind::kParent;
    origin.source = directory.string();
    origin.tensors = 3 * static_cast<int64_t>(ShardExpertTensorNames(options_.hosted).size() / 3);
    return std::make_pair(std::move(matrices), origin);
  });
}

absl::StatusOr<Recipe> WeightSetStore::ParseRecipeText(const std::string& json) const {
  const std::filesystem::path relative_to =
      options_.recipes_dir.empty() ? std::filesystem::current_path() : options_.recipes_dir;
  return ParseRecipeJson(json, relative_to);
}

absl::StatusOr<Recipe> WeightSetStore::ReadRecipeFile(const std::string& file_name) const {
  if (options_.recipes_dir.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", options_.shard_name, " has no --recipes-dir; send the recipe itself"));
  }
  if (file_name.empty() || file_name.find('/') != std::string::npos || file_name == "." || file_name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("recipe file '", file_name, "' must be a plain file name"));
  }
  return LoadRecipeFile(options_.recipes_dir / file_name);
}

absl::StatusOr<WeightSetStatus> WeightSetStore::PrepareBlend(Recipe recipe, uint64_t version, bool commit,
                                                             std::stop_token stop) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateName(recipe.name, "blend"));
  std::vector<std::string> fingerprints;
  std::shared_ptr<const WeightSet> base_set;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = entries_.lower_bound({recipe.name, 0}); it != entries_.end() && it->first.first == recipe.name; ++it) {
      if (it->second->kind == WeightSetKind::kParent) {
        return absl::InvalidArgumentError(absl::StrCat("'", recipe.name, "' is a parent on shard ", options_.shard_name,
                                                       "; the blend needs another name"));
      }
    }
    for (RecipeParent& parent : recipe.parents) {
      if (parent.name == recipe.name) {
        return absl::InvalidArgumentError(absl::StrCat("blend '", recipe.name, "' names itself as a parent"));
      }
      const Entry* found = nullptr;
      for (auto it = entries_.lower_bound({parent.name, 0}); it != entries_.end() && it->first.first == parent.name; ++it) {
        if (it->second->state == WeightSetState::kReady) found = it->second.get();
      }
      if (found == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("recipe '", recipe.name, "': unknown parent '", parent.name,
                                                       "' (not a loaded parent on shard ", options_.shard_name,
                                                       "; LoadParent it first)"));
      }
      if (found->kind != WeightSetKind::kParent || found->checkpoint_dir.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("recipe '", recipe.name, "': '", parent.name,
                                                       "' is not a parent loaded from a checkpoint (blends combine parents)"));
      }
      if (!parent.checkpoint.empty() && Canonical(parent.checkpoint) != found->checkpoint_dir) {
        return absl::InvalidArgumentError(absl::StrCat("recipe '", recipe.name, "': parent '", parent.name, "' names ",
                                                       parent.checkpoint.string(), " but was loaded from ",
                                                       found->checkpoint_dir.string()));
      }
      parent.checkpoint = found->checkpoint_dir;
      fingerprints.push_back(found->fingerprint);
      if (parent.name == recipe.base_parent) base_set = found->set;
    }
  }
  EXPERTMESH_RETURN_IF_ERROR(ValidateRecipe(recipe));
  std::vector<std::shared_ptr<const Checkpoint>> checkpoints;
  std::vector<const Checkpoint*> pointers;
  for (size_t i = 0; i < recipe.parents.size(); ++i) {
    const RecipeParent& parent = recipe.parents[i];
    absl::StatusOr<std::unique_ptr<Checkpoint>> opened =
        Checkpoint::Open(parent.checkpoint, ShardTensorFilter(options_.hosted));
    if (!opened.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("recipe '", recipe.name, "': parent '", parent.name,
                                                        "' cannot be reopened: ", opened.status().message()));
    }
    if (CheckpointFingerprint(**opened) != fingerprints[i]) {
      return absl::FailedPreconditionError(absl::StrCat("recipe '", recipe.name, "': the files of parent '", parent.name,
                                                        "' (", parent.checkpoint.string(),
                                                        ") changed since it was loaded; load it again"));
    }
    checkpoints.push_back(*std::move(opened));
    pointers.push_back(checkpoints.back().get());
  }
  TensorMergerOptions merger_options;
  merger_options.require_every_glob_to_match = false;  // the shard sees only its own experts
  absl::StatusOr<std::unique_ptr<TensorMerger>> created = TensorMerger::Create(recipe, pointers, merger_options);
  if (!created.ok()) {
    return absl::Status(created.status().code(),
                        absl::StrCat("recipe '", recipe.name, "' on shard ", options_.shard_name, ": ", created.status().message()));
  }
  std::shared_ptr<const TensorMerger> merger = *std::move(created);
  uint64_t known_need = 0;  // delta 0: every selected tensor gets its own storage
  if (recipe.delta == 0.0) {
    for (const std::string& name : ShardExpertTensorNames(options_.hosted)) {
      if (const OutputTensorSpec* spec = merger->FindOutput(name); spec != nullptr && spec->selected) {
        known_need += static_cast<uint64_t>(ShapeElementCount(spec->shape)) * sizeof(float);
      }
    }
  }
  Entry* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return absl::UnavailableError("the expert shard is stopping");
    EXPERTMESH_ASSIGN_OR_RETURN(const uint64_t picked, PickVersionLocked(recipe.name, version));
    EXPERTMESH_RETURN_IF_ERROR(CheckBudgetLocked(known_need, absl::StrCat("blend '", recipe.name, "'")));
    auto fresh = std::make_unique<Entry>();
    fresh->name = recipe.name;
    fresh->version = picked;
    fresh->kind = WeightSetKind::kBlend;
    fresh->state = WeightSetState::kMerging;
    fresh->source = RecipeToJson(recipe);
    fresh->base_parent = recipe.base_parent;
    fresh->progress.blend = true;
    entry = fresh.get();
    entries_[{recipe.name, picked}] = std::move(fresh);
  }
  return RunBuild(entry, commit, stop,
                  [this, merger, checkpoints, base_set, recipe](
                      const BuildControl& control) -> absl::StatusOr<std::pair<ExpertMatrixMap, WeightSetOrigin>> {
                    EXPERTMESH_ASSIGN_OR_RETURN(BlendMatrices blend,
                                                MergeBlendMatrices(*merger, base_set->matrices(), options_.hosted, control));
                    WeightSetOrigin origin;
                    origin.kind = WeightSetKind::kBlend;
                    origin.source = RecipeToJson(recipe);
                    origin.base_parent = recipe.base_parent;
                    origin.merged = blend.merged;
                    origin.shared_with_base = blend.shared_with_base;
                    origin.tensors = blend.merged + blend.shared_with_base;
                    return std::make_pair(std::move(blend.matrices), origin);
                  });
}

void WeightSetStore::CommitLocked(Entry& entry, std::vector<std::function<void()>>& notifications) {
  for (auto it = entries_.lower_bound({entry.name, 0}); it != entries_.end() && it->first.first == entry.name; ++it) {
    if (it->second.get() != &entry && it->second->state == WeightSetState::kReady) {
      it->second->state = WeightSetState::kRetired;
    }
  }
  entry.state = WeightSetState::kReady;
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

absl::StatusOr<std::optional<WeightSetStatus>> WeightSetStore::Abort(const std::string& name, uint64_t version) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = entries_.find({name, version});
    if (found == entries_.end()) return std::optional<WeightSetStatus>();
    Entry& entry = *found->second;
    if (entry.building()) {
      entry.stop.request_stop();  // the build fails CANCELLED and removes the entry
      return std::optional<WeightSetStatus>(StatusLocked(entry, nullptr));
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
                                                                  std::optional<Clock::time_point> wait_until) {
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
  EXPERTMESH_RETURN_IF_ERROR(ValidateName(name, "weight set"));
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
    highest_version_[name] = std::max(highest_version_[name], picked);
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
