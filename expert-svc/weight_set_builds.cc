// WeightSetStore builds: loading a parent and preparing a blend (validation before anything
// changes, version and budget under the lock, the build itself outside it with progress,
// reservations and cancellation), and recipe text or files.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "engine/core/status_macros.h"
#include "engine/format/checkpoint.h"
#include "engine/merge/tensor_merger.h"
#include "expert-svc/weight_set_store.h"
#include "expert-svc/weight_set_store_entry.h"

namespace expertmesh::expert_service {

absl::StatusOr<WeightSetStatus> WeightSetStore::RunBuild(
    Entry* entry, bool commit, std::stop_token caller_stop,
    const std::function<absl::StatusOr<std::pair<ExpertMatrixMap, WeightSetOrigin>>(const BuildControl&)>& build) {
  const auto started = StoreClock::now();
  std::stop_source entry_stop = entry->stop;
  std::stop_callback forward(caller_stop, [entry_stop]() mutable { entry_stop.request_stop(); });
  BuildControl control;
  control.stop = entry_stop.get_token();
  const std::string what = absl::StrCat("weight set '", entry->name, "' v", entry->version);
  auto last_log = StoreClock::now() - std::chrono::seconds(2);  // the first line at once
  control.progress = [this, entry, what, last_log](const BuildProgress& progress) mutable {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      entry->progress = progress;
    }
    const auto now = StoreClock::now();
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
      RecomputeResidentLocked();
      if (commit) CommitLocked(*entry, notifications);
      result = StatusLocked(*entry, nullptr);
    }
    if (observer_.on_build) {
      const double seconds = std::chrono::duration<double>(StoreClock::now() - started).count();
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
  EXPERTMESH_RETURN_IF_ERROR(ValidateWeightSetName(name, "parent"));
  if (checkpoint_dir.empty()) return absl::InvalidArgumentError("parent checkpoint directory is empty");
  const std::filesystem::path directory = CanonicalPath(checkpoint_dir);
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
  EXPERTMESH_RETURN_IF_ERROR(ValidateWeightSetName(recipe.name, "blend"));
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
      if (!parent.checkpoint.empty() && CanonicalPath(parent.checkpoint) != found->checkpoint_dir) {
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

}  // namespace expertmesh::expert_service
