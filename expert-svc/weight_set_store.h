// WeightSetStore: every weight set one expert shard holds — parents loaded at runtime from
// checkpoints and blends built from recipes — with their lifecycle, versions, the default, the
// memory budget and in-flight tracking. Backend-agnostic: sets are host tensors (shared between
// sets wherever values are equal) handed to an ExpertBackend for the RoutedExperts that computes.
//
// Lifecycle of (name, version):  LOADING|MERGING -> PREPARED -> READY -> RETIRED -> DRAINING -> freed
//   - builds run in the caller's thread (the admin RPC), report progress in List() and stop when
//     the caller's stop token or Abort() asks (CANCELLED); a failed build leaves nothing behind;
//   - Commit makes a PREPARED set READY: requests naming the set without a version get it, and
//     the previous READY version of the name becomes RETIRED (it still serves requests that pinned
//     it, until dropped);
//   - Drop turns READY/RETIRED sets DRAINING; they are freed as soon as no request computes on
//     them (a janitor thread checks). The default set cannot be dropped.
// Memory: the budget counts every distinct resident tensor once plus what builds in progress have
// reserved; a build that would exceed it fails RESOURCE_EXHAUSTED (at once when the need is known
// up front: a parent's size, a delta-0 blend's merged tensors).
// Versions: per name, each build gets a version higher than every committed or resident one
// (0 = next); an aborted or failed build leaves the next version unchanged.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/format/model_config.h"
#include "engine/merge/recipe.h"
#include "expert-svc/expert_backend.h"
#include "expert-svc/hosted_experts.h"
#include "expert-svc/weight_set.h"
#include "expert-svc/weight_set_builder.h"

namespace expertmesh::expert_service {

enum class WeightSetState { kLoading, kMerging, kPrepared, kReady, kRetired, kDraining };
const char* WeightSetStateName(WeightSetState state);  // "loading", ..., "draining"

struct WeightSetStatus {
  std::string name;
  uint64_t version = 0;
  WeightSetKind kind = WeightSetKind::kParent;
  WeightSetState state = WeightSetState::kLoading;
  bool is_default = false;
  uint64_t referenced_bytes = 0;
  uint64_t unique_bytes = 0;  // freed by dropping this set
  uint64_t shared_bytes = 0;  // referenced - unique
  BuildProgress progress;
  std::string source;       // checkpoint directory / recipe JSON
  std::string base_parent;  // blends
  int64_t requests_in_flight = 0;
};

struct StoreSnapshot {
  std::vector<WeightSetStatus> weight_sets;  // by name, then version
  std::string default_name;
  uint64_t resident_bytes = 0;  // distinct tensors of all resident sets
  uint64_t budget_bytes = 0;
  std::map<std::string, uint64_t> next_versions;
};

struct WeightSetStoreOptions {
  std::string shard_name;
  ModelConfig model;      // the served model: every set's experts have its shapes
  HostedExperts hosted;   // the experts every set holds
  uint64_t budget_bytes = 0;  // 0: no limit
  std::filesystem::path recipes_dir;  // recipe files named by admin calls live here ("" = none)
  bool log_progress = false;  // build progress on stderr, at most once a second per build
};

// Metrics hooks (engine/metrics BlendMetrics fits them); each may be empty. Called without the
// store's lock held.
struct WeightSetObserver {
  // A set became READY (bytes = its referenced bytes).
  std::function<void(const std::string& name, uint64_t version, uint64_t bytes)> on_ready;
  // The last resident version of `name` was freed.
  std::function<void(const std::string& name)> on_gone;
  // A load or blend attempt ended (success or not) after `seconds`.
  std::function<void(const std::string& name, bool success, double seconds)> on_build;
};

class WeightSetStore {
 public:
  WeightSetStore(WeightSetStoreOptions options, std::unique_ptr<ExpertBackend> backend);
  ~WeightSetStore();
  WeightSetStore(const WeightSetStore&) = delete;
  WeightSetStore& operator=(const WeightSetStore&) = delete;

  void set_observer(WeightSetObserver observer);

  // Loads the hosted experts of the checkpoint in `checkpoint_dir` as parent `name`. `commit`:
  // READY at once, else PREPARED. Errors: INVALID_ARGUMENT (name, expert layout), NOT_FOUND (no
  // checkpoint), FAILED_PRECONDITION (version not above the name's), ALREADY_EXISTS,
  // RESOURCE_EXHAUSTED, CANCELLED, DATA_LOSS (bad tensor bytes).
  absl::StatusOr<WeightSetStatus> LoadParent(const std::string& name, const std::filesystem::path& checkpoint_dir,
                                             uint64_t version, bool commit, std::stop_token stop = {});
  // Builds blend `recipe.name` from loaded parents. A recipe parent's checkpoint may be empty (it
  // is the loaded parent's) or must be the loaded parent's directory. Malformed recipes are
  // INVALID_ARGUMENT before anything changes (unknown or non-parent parent, lambda/delta values,
  // parents whose configs or tensor shapes differ, a name clash with a parent).
  absl::StatusOr<WeightSetStatus> PrepareBlend(Recipe recipe, uint64_t version, bool commit,
                                               std::stop_token stop = {});
  // Recipe text or a file in the recipes dir (plain file name), then PrepareBlend.
  absl::StatusOr<Recipe> ParseRecipeText(const std::string& json) const;
  absl::StatusOr<Recipe> ReadRecipeFile(const std::string& file_name) const;

  // PREPARED -> READY. NOT_FOUND if (name, version) is not PREPARED (FAILED_PRECONDITION if it
  // exists in another state); committing a READY set again is OK.
  absl::StatusOr<WeightSetStatus> Commit(const std::string& name, uint64_t version);
  // Discards a PREPARED set or cancels its build (which then fails CANCELLED and removes it). With
  // `wait_until`, a cancelled build is waited for until its entry is gone (DEADLINE_EXCEEDED if
  // not by then; it still goes later), so "aborted" means nothing is left. nullopt if nothing was
  // there (idempotent).
  absl::StatusOr<std::optional<WeightSetStatus>> Abort(
      const std::string& name, uint64_t version,
      std::optional<std::chrono::steady_clock::time_point> wait_until = std::nullopt);
  // READY/RETIRED -> DRAINING (version 0: every version of `name`; builds are cancelled, prepared
  // sets discarded). With `wait_until`, waits until they are freed (DEADLINE_EXCEEDED if not by
  // then; they are still freed later). NOT_FOUND if nothing matches; FAILED_PRECONDITION for the
  // default's READY version.
  absl::StatusOr<std::vector<WeightSetStatus>> Drop(
      const std::string& name, uint64_t version,
      std::optional<std::chrono::steady_clock::time_point> wait_until = std::nullopt);
  // The READY set `name` becomes the default (NOT_FOUND otherwise).
  absl::Status SetDefault(const std::string& name);

  StoreSnapshot List() const;
  std::string default_name() const;
  const std::string& backend_name() const { return backend_name_; }
  const WeightSetStoreOptions& options() const { return options_; }

  // For one request: the set named `name` ("" = the default) at `version` (0 = its READY
  // version; a pinned version is served while READY, RETIRED or DRAINING). NOT_FOUND for a name
  // with no resident version; FAILED_PRECONDITION for a version the name does not have (the
  // message names the request's pinned version) or one not committed yet.
  absl::StatusOr<WeightSet::UseGuard> Acquire(const std::string& name, uint64_t version) const;

  // A set whose RoutedExperts was built elsewhere (no host matrices; e.g. tests or a backend that
  // loads straight to the device): READY at once, default if none is set.
  absl::Status InstallPrebuilt(const std::string& name, uint64_t version, std::unique_ptr<RoutedExperts> experts,
                               uint64_t bytes);

 private:
  struct Entry;
  struct ParentInfo;
  using Key = std::pair<std::string, uint64_t>;

  // Version for a new build of `name` (`requested` 0 = next), validated; under mutex_.
  absl::StatusOr<uint64_t> PickVersionLocked(const std::string& name, uint64_t requested) const;
  uint64_t NextVersionLocked(const std::string& name) const;
  // Runs `build` for a new entry and installs or discards the result.
  absl::StatusOr<WeightSetStatus> RunBuild(
      Entry* entry, bool commit, std::stop_token caller_stop,
      const std::function<absl::StatusOr<std::pair<ExpertMatrixMap, WeightSetOrigin>>(const BuildControl&)>& build);
  absl::Status CheckBudgetLocked(uint64_t more_bytes, const std::string& what) const;
  void CommitLocked(Entry& entry, std::vector<std::function<void()>>& notifications);
  void RecomputeResidentLocked();
  WeightSetStatus StatusLocked(const Entry& entry, const std::map<const Tensor*, int>* users) const;
  std::map<const Tensor*, int> TensorUsersLocked() const;
  void JanitorLoop();
  void FreeDrainedLocked(std::vector<std::function<void()>>& notifications);

  const WeightSetStoreOptions options_;
  const std::unique_ptr<ExpertBackend> backend_;
  const std::string backend_name_;
  WeightSetObserver observer_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // entries freed, drain requested, stopping
  std::map<Key, std::unique_ptr<Entry>> entries_;
  std::map<std::string, uint64_t> highest_version_;  // per name, over every committed version
  std::string default_name_;
  uint64_t resident_bytes_ = 0;
  uint64_t reserved_bytes_ = 0;  // builds in progress
  bool stopping_ = false;
  std::thread janitor_;
};

}  // namespace expertmesh::expert_service
