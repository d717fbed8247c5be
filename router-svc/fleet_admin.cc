// FleetAdmin: shard channels, parallel admin calls, the two-phase commit, catalog sync and the
// background retirement of old versions.
#include "router-svc/fleet_admin.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/merge/recipe.h"
#include "engine/rpc/admin_token.h"
#include "engine/rpc/grpc_status.h"

namespace expertmesh::router_service {
namespace {

using Clock = std::chrono::steady_clock;

// Runs fn(i) for i in [0, count) on one thread each and waits for all.
void ForEachInParallel(size_t count, const std::function<void(size_t)>& fn) {
  std::vector<std::thread> threads;
  for (size_t i = 0; i < count; ++i) threads.emplace_back([&fn, i] { fn(i); });
  for (auto& thread : threads) thread.join();
}

absl::Status ShardError(const std::string& address, const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat("shard ", address, ": ", status.error_message()));
}

const v1::WeightSetStatus* FindStatus(const v1::ListWeightSetsResponse& list, const std::string& name, uint64_t version) {
  for (const auto& status : list.weight_sets()) {
    if (status.name() == name && status.version() == version) return &status;
  }
  return nullptr;
}

}  // namespace

FleetAdmin::FleetAdmin(ShardSource shards, BlendCatalog* catalog, FleetAdminOptions options)
    : shard_source_(std::move(shards)), catalog_(catalog), options_(std::move(options)) {
  retirer_ = std::thread([this] { RetireLoop(); });
}

FleetAdmin::~FleetAdmin() {
  {
    std::lock_guard<std::mutex> lock(retire_mutex_);
    stopping_ = true;
  }
  retire_changed_.notify_all();
  retirer_.join();
}

absl::StatusOr<std::vector<FleetAdmin::Shard*>> FleetAdmin::Shards() {
  absl::StatusOr<std::vector<std::string>> addresses = shard_source_();
  if (!addresses.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot learn the expert shards: ", addresses.status().message()));
  }
  if (addresses->empty()) return absl::UnavailableError("no expert shards are known");
  std::lock_guard<std::mutex> lock(shards_mutex_);
  std::vector<Shard*> shards;
  for (const std::string& address : *addresses) {
    std::unique_ptr<Shard>& shard = shards_[address];
    if (!shard) {
      shard = std::make_unique<Shard>();
      shard->address = address;
      shard->channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
      shard->stub = v1::ExpertAdminService::NewStub(shard->channel);
    }
    shards.push_back(shard.get());
  }
  return shards;
}

std::unique_ptr<grpc::ClientContext> FleetAdmin::Context(std::chrono::milliseconds timeout,
                                                         const grpc::ServerContext* parent) const {
  auto context = std::make_unique<grpc::ClientContext>();
  auto deadline = std::chrono::system_clock::now() + timeout;
  if (parent != nullptr) deadline = std::min(deadline, parent->deadline());
  context->set_deadline(deadline);
  context->set_wait_for_ready(false);
  if (!options_.token.empty()) rpc::AttachAdminToken(*context, options_.token);
  return context;
}

absl::StatusOr<std::vector<v1::ListWeightSetsResponse>> FleetAdmin::ListAll(const std::vector<Shard*>& shards) {
  std::vector<v1::ListWeightSetsResponse> lists(shards.size());
  std::vector<grpc::Status> statuses(shards.size());
  ForEachInParallel(shards.size(), [&](size_t i) {
    auto context = Context(options_.call_timeout);
    statuses[i] = shards[i]->stub->ListWeightSets(context.get(), v1::ListWeightSetsRequest(), &lists[i]);
  });
  for (size_t i = 0; i < shards.size(); ++i) {
    if (!statuses[i].ok()) return ShardError(shards[i]->address, statuses[i]);
  }
  return lists;
}

absl::Status FleetAdmin::Sync(bool retire_old) {
  std::lock_guard<std::mutex> change(change_mutex_);
  return SyncLocked(retire_old);
}

absl::Status FleetAdmin::SyncLocked(bool retire_old) {
  absl::StatusOr<std::vector<Shard*>> shards = Shards();
  if (!shards.ok()) return shards.status();
  absl::StatusOr<std::vector<v1::ListWeightSetsResponse>> lists = ListAll(*shards);
  if (!lists.ok()) return lists.status();
  // name -> (shards with it READY, lowest version, kind)
  std::map<std::string, std::tuple<size_t, uint64_t, v1::WeightSetKind>> ready;
  std::map<std::string, size_t> defaults;
  for (const auto& list : *lists) {
    ++defaults[list.default_weight_set()];
    for (const auto& status : list.weight_sets()) {
      if (status.state() != v1::WEIGHT_SET_STATE_READY) continue;
      auto [entry, inserted] = ready.emplace(status.name(), std::make_tuple(size_t{0}, status.version(), status.kind()));
      ++std::get<0>(entry->second);
      std::get<1>(entry->second) = std::min(std::get<1>(entry->second), status.version());
    }
  }
  std::vector<CatalogEntry> current;
  for (const auto& [name, info] : ready) {
    if (std::get<0>(info) == lists->size()) current.push_back({name, std::get<1>(info), std::get<2>(info)});
  }
  std::string default_name;
  size_t best = 0;
  for (const auto& [name, count] : defaults) {
    if (count > best) {
      best = count;
      default_name = name;
    }
  }
  catalog_->Reset(current, default_name, retire_old);
  return absl::OkStatus();
}

absl::StatusOr<v1::FleetWeightSet> FleetAdmin::TwoPhase(
    const std::string& name, v1::WeightSetKind kind, const grpc::ServerContext* parent,
    const std::function<grpc::Status(Shard&, uint64_t version, grpc::ClientContext&)>& prepare) {
  absl::StatusOr<std::vector<Shard*>> shards = Shards();
  if (!shards.ok()) return shards.status();
  absl::StatusOr<std::vector<v1::ListWeightSetsResponse>> lists = ListAll(*shards);
  if (!lists.ok()) {
    return absl::UnavailableError(absl::StrCat(lists.status().message(), " (every shard must answer to change the fleet)"));
  }
  uint64_t version = 1;
  for (const auto& list : *lists) {
    if (auto found = list.next_versions().find(name); found != list.next_versions().end()) {
      version = std::max(version, found->second);
    }
  }
  // Phase one: prepare everywhere; the first failure cancels the others' calls.
  const size_t count = shards->size();
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  for (size_t i = 0; i < count; ++i) contexts.push_back(Context(options_.build_timeout, parent));
  std::vector<grpc::Status> statuses(count);
  std::mutex failure_mutex;
  bool failed = false;
  // The admin caller going away (cancel, deadline) cancels the prepares.
  std::jthread watch([&, parent](std::stop_token done) {
    while (parent != nullptr && !done.stop_requested()) {
      if (parent->IsCancelled()) {
        for (auto& context : contexts) context->TryCancel();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  ForEachInParallel(count, [&](size_t i) {
    statuses[i] = prepare(*(*shards)[i], version, *contexts[i]);
    if (!statuses[i].ok()) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failed) {
        failed = true;
        for (size_t j = 0; j < count; ++j) {
          if (j != i) contexts[j]->TryCancel();
        }
      }
    }
  });
  watch.request_stop();
  watch.join();
  if (failed) {
    // Abort everywhere (also where the prepare had finished), then report the root cause.
    ForEachInParallel(count, [&](size_t i) {
      auto context = Context(options_.call_timeout);
      v1::AbortBlendRequest abort;
      abort.set_name(name);
      abort.set_version(version);
      v1::WeightSetResponse ignored;
      const grpc::Status aborted = (*shards)[i]->stub->AbortBlend(context.get(), abort, &ignored);
      if (!aborted.ok()) {
        std::fprintf(stderr, "router-svc: abort of '%s' v%llu on shard %s failed: %s\n", name.c_str(),
                     static_cast<unsigned long long>(version), (*shards)[i]->address.c_str(),
                     aborted.error_message().c_str());
      }
    });
    size_t cause = count;
    for (size_t i = 0; i < count && cause == count; ++i) {
      if (!statuses[i].ok() && statuses[i].error_code() != grpc::StatusCode::CANCELLED) cause = i;
    }
    for (size_t i = 0; i < count && cause == count; ++i) {
      if (!statuses[i].ok()) cause = i;
    }
    const absl::Status error = ShardError((*shards)[cause]->address, statuses[cause]);
    return absl::Status(error.code(),
                        absl::StrCat(error.message(), " (aborted on every shard; nothing changed)"));
  }
  // Phase two: commit everywhere.
  std::vector<grpc::Status> commits(count);
  ForEachInParallel(count, [&](size_t i) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto context = Context(options_.call_timeout);
      v1::CommitBlendRequest commit;
      commit.set_name(name);
      commit.set_version(version);
      v1::WeightSetResponse ignored;
      commits[i] = (*shards)[i]->stub->CommitBlend(context.get(), commit, &ignored);
      if (commits[i].ok() || commits[i].error_code() != grpc::StatusCode::UNAVAILABLE) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  std::vector<std::string> failures, committed;
  for (size_t i = 0; i < count; ++i) {
    if (commits[i].ok()) {
      committed.push_back((*shards)[i]->address);
    } else {
      failures.push_back(absl::StrCat((*shards)[i]->address, ": ", commits[i].error_message()));
    }
  }
  if (!failures.empty()) {
    return absl::InternalError(absl::StrCat("'", name, "' v", version, " was prepared on every shard but the commit failed on ",
                                            absl::StrJoin(failures, "; "), " (committed on: ",
                                            absl::StrJoin(committed, ", "),
                                            "); the router keeps serving the previous version"));
  }
  catalog_->Commit({name, version, kind});
  std::fprintf(stderr, "router-svc: '%s' v%llu committed on %zu shard(s)\n", name.c_str(),
               static_cast<unsigned long long>(version), count);
  const CatalogSnapshot snapshot = catalog_->Snapshot();
  absl::StatusOr<std::vector<v1::ListWeightSetsResponse>> after = ListAll(*shards);
  std::vector<std::string> addresses;
  for (const Shard* shard : *shards) addresses.push_back(shard->address);
  for (const CatalogNameSnapshot& entry : snapshot.names) {
    if (entry.current.name == name) {
      return Describe(entry, snapshot, addresses, after.ok() ? *after : std::vector<v1::ListWeightSetsResponse>());
    }
  }
  return absl::InternalError("committed weight set missing from the catalog");
}

absl::StatusOr<v1::FleetWeightSet> FleetAdmin::LoadParent(const std::string& name, const std::string& checkpoint,
                                                          const grpc::ServerContext* parent) {
  std::lock_guard<std::mutex> change(change_mutex_);
  if (!catalog_->initialized()) (void)SyncLocked(true);
  return TwoPhase(name, v1::WEIGHT_SET_KIND_PARENT, parent, [&](Shard& shard, uint64_t version, grpc::ClientContext& context) {
    v1::LoadParentRequest request;
    request.set_name(name);
    request.set_checkpoint(checkpoint);
    request.set_version(version);
    request.set_prepare_only(true);
    v1::WeightSetResponse response;
    return shard.stub->LoadParent(&context, request, &response);
  });
}

absl::StatusOr<v1::FleetWeightSet> FleetAdmin::CreateBlend(const v1::CreateBlendRequest& request,
                                                           const grpc::ServerContext* parent) {
  // The shards get the recipe as sent (a file is read here and sent as JSON); the router only
  // needs its name, and rejects malformed JSON before touching any shard.
  v1::PrepareBlendRequest prepare;
  std::string name;
  const std::filesystem::path relative_to =
      options_.recipes_dir.empty() ? std::filesystem::current_path() : options_.recipes_dir;
  switch (request.recipe_source_case()) {
    case v1::CreateBlendRequest::kRecipe:
      *prepare.mutable_recipe() = request.recipe();
      name = request.recipe().name();
      break;
    case v1::CreateBlendRequest::kRecipeJson: {
      absl::StatusOr<Recipe> recipe = ParseRecipeJson(request.recipe_json(), relative_to);
      if (!recipe.ok()) return recipe.status();
      prepare.set_recipe_json(request.recipe_json());
      name = recipe->name;
      break;
    }
    case v1::CreateBlendRequest::kRecipeFile: {
      const std::string& file = request.recipe_file();
      if (options_.recipes_dir.empty()) return absl::FailedPreconditionError("router-svc has no --recipes-dir");
      if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
        return absl::InvalidArgumentError(absl::StrCat("recipe file '", file, "' must be a plain file name"));
      }
      std::ifstream in(options_.recipes_dir / file, std::ios::binary);
      if (!in) return absl::NotFoundError(absl::StrCat("no recipe file '", file, "' in ", options_.recipes_dir.string()));
      std::stringstream text;
      text << in.rdbuf();
      absl::StatusOr<Recipe> recipe = ParseRecipeJson(text.str(), relative_to);
      if (!recipe.ok()) return absl::Status(recipe.status().code(), absl::StrCat(file, ": ", recipe.status().message()));
      prepare.set_recipe_json(text.str());
      name = recipe->name;
      break;
    }
    default:
      return absl::InvalidArgumentError("no recipe: set recipe, recipe_json or recipe_file");
  }
  if (name.empty()) return absl::InvalidArgumentError("recipe: \"name\" is empty");
  std::lock_guard<std::mutex> change(change_mutex_);
  if (!catalog_->initialized()) (void)SyncLocked(true);
  return TwoPhase(name, v1::WEIGHT_SET_KIND_BLEND, parent, [&](Shard& shard, uint64_t version, grpc::ClientContext& context) {
    v1::PrepareBlendRequest sent = prepare;
    sent.set_version(version);
    sent.set_prepare_only(true);
    v1::WeightSetResponse response;
    return shard.stub->PrepareBlend(&context, sent, &response);
  });
}

v1::FleetWeightSet FleetAdmin::Describe(const CatalogNameSnapshot& entry, const CatalogSnapshot& catalog,
                                        const std::vector<std::string>& addresses,
                                        const std::vector<v1::ListWeightSetsResponse>& lists) const {
  v1::FleetWeightSet fleet;
  fleet.set_name(entry.current.name);
  fleet.set_version(entry.current.version);
  fleet.set_kind(entry.current.kind);
  fleet.set_is_default(entry.current.name == catalog.default_name);
  auto weight = catalog.split.find(entry.current.name);
  fleet.set_split_weight(weight == catalog.split.end() ? 0.0 : weight->second);
  fleet.set_requests_in_flight(static_cast<uint64_t>(entry.requests_in_flight));
  for (uint64_t version : entry.retiring_versions) fleet.add_retiring_versions(version);
  for (size_t i = 0; i < lists.size() && i < addresses.size(); ++i) {
    v1::ShardWeightSet* shard = fleet.add_shards();
    shard->set_address(addresses[i]);
    if (const v1::WeightSetStatus* status = FindStatus(lists[i], entry.current.name, entry.current.version)) {
      *shard->mutable_status() = *status;
    }
  }
  return fleet;
}

absl::StatusOr<v1::FleetWeightSets> FleetAdmin::List() {
  if (!catalog_->initialized()) {
    // Never waits for a running fleet change (progress is listed while a blend is built).
    std::unique_lock<std::mutex> change(change_mutex_, std::try_to_lock);
    if (change.owns_lock()) (void)SyncLocked(true);
  }
  absl::StatusOr<std::vector<Shard*>> shards = Shards();
  if (!shards.ok()) return shards.status();
  // Partial answers are useful (progress of a build while another shard restarts): an unreachable
  // shard is listed with the error as its name.
  std::vector<v1::ListWeightSetsResponse> lists(shards->size());
  std::vector<grpc::Status> statuses(shards->size());
  ForEachInParallel(shards->size(), [&](size_t i) {
    auto context = Context(options_.call_timeout);
    statuses[i] = (*shards)[i]->stub->ListWeightSets(context.get(), v1::ListWeightSetsRequest(), &lists[i]);
    if (!statuses[i].ok()) {
      lists[i].Clear();
      lists[i].set_shard(absl::StrCat("(unreachable: ", statuses[i].error_message(), ")"));
    }
  });
  const CatalogSnapshot catalog = catalog_->Snapshot();
  v1::FleetWeightSets fleet;
  std::vector<std::string> addresses;
  for (const Shard* shard : *shards) addresses.push_back(shard->address);
  for (const CatalogNameSnapshot& entry : catalog.names) *fleet.add_weight_sets() = Describe(entry, catalog, addresses, lists);
  fleet.set_default_weight_set(catalog.default_name);
  for (size_t i = 0; i < lists.size(); ++i) {
    *fleet.add_shards() = lists[i];
    fleet.add_shard_addresses(addresses[i]);
  }
  return fleet;
}

absl::Status FleetAdmin::DropBlend(const std::string& name) {
  std::lock_guard<std::mutex> change(change_mutex_);
  if (!catalog_->initialized()) (void)SyncLocked(true);
  const uint64_t current = catalog_->CurrentVersion(name);
  if (absl::Status removed = catalog_->Remove(name); !removed.ok()) return removed;
  // Older versions the shards still hold and no request of this router uses go too (the current
  // one is retired by the catalog once its last request ends).
  absl::StatusOr<std::vector<Shard*>> shards = Shards();
  if (shards.ok()) {
    std::set<uint64_t> versions;
    if (auto lists = ListAll(*shards); lists.ok()) {
      for (const auto& list : *lists) {
        for (const auto& status : list.weight_sets()) {
          if (status.name() == name) versions.insert(status.version());
        }
      }
    }
    for (uint64_t version : versions) {
      if (version != current && !catalog_->IsPinned(name, version)) RetireVersion(name, version);
    }
  }
  std::fprintf(stderr, "router-svc: '%s' is no longer served; its versions are dropped once idle\n", name.c_str());
  return absl::OkStatus();
}

absl::Status FleetAdmin::SetDefault(const std::string& name) {
  std::lock_guard<std::mutex> change(change_mutex_);
  if (!catalog_->initialized()) (void)SyncLocked(true);
  if (catalog_->CurrentVersion(name) == 0) return absl::NotFoundError(absl::StrCat("no weight set '", name, "' is served"));
  absl::StatusOr<std::vector<Shard*>> shards = Shards();
  if (!shards.ok()) return shards.status();
  std::vector<grpc::Status> statuses(shards->size());
  ForEachInParallel(shards->size(), [&](size_t i) {
    auto context = Context(options_.call_timeout);
    v1::SetDefaultRequest request;
    request.set_name(name);
    v1::ListWeightSetsResponse ignored;
    statuses[i] = (*shards)[i]->stub->SetDefault(context.get(), request, &ignored);
  });
  for (size_t i = 0; i < shards->size(); ++i) {
    if (!statuses[i].ok()) return ShardError((*shards)[i]->address, statuses[i]);
  }
  return catalog_->SetDefault(name);
}

void FleetAdmin::RetireVersion(const std::string& name, uint64_t version) {
  {
    std::lock_guard<std::mutex> lock(retire_mutex_);
    retire_queue_.emplace_back(name, version);
  }
  retire_changed_.notify_all();
}

bool FleetAdmin::WaitRetirementsDone(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(retire_mutex_);
  return retire_changed_.wait_for(lock, timeout, [&] { return retire_queue_.empty() && retiring_now_ == 0; });
}

void FleetAdmin::RetireLoop() {
  std::map<std::pair<std::string, uint64_t>, int> attempts;
  std::unique_lock<std::mutex> lock(retire_mutex_);
  while (true) {
    retire_changed_.wait(lock, [&] { return stopping_ || !retire_queue_.empty(); });
    if (stopping_) return;
    const auto [name, version] = retire_queue_.front();
    retire_queue_.pop_front();
    ++retiring_now_;
    lock.unlock();
    bool retry = false;
    absl::StatusOr<std::vector<Shard*>> shards = Shards();
    if (!shards.ok()) {
      retry = true;
    } else {
      std::vector<grpc::Status> statuses(shards->size());
      ForEachInParallel(shards->size(), [&](size_t i) {
        auto context = Context(options_.call_timeout);
        v1::DropWeightSetRequest request;
        request.set_name(name);
        request.set_version(version);
        v1::WeightSetResponse ignored;
        statuses[i] = (*shards)[i]->stub->DropWeightSet(context.get(), request, &ignored);
      });
      for (size_t i = 0; i < shards->size(); ++i) {
        const grpc::Status& status = statuses[i];
        if (status.ok() || status.error_code() == grpc::StatusCode::NOT_FOUND) continue;
        // The default cannot be dropped (the operator made it the default again): keep it.
        if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) continue;
        std::fprintf(stderr, "router-svc: dropping '%s' v%llu on shard %s failed: %s\n", name.c_str(),
                     static_cast<unsigned long long>(version), (*shards)[i]->address.c_str(),
                     status.error_message().c_str());
        retry = true;
      }
    }
    if (!retry) {
      std::fprintf(stderr, "router-svc: '%s' v%llu retired and dropped on every shard\n", name.c_str(),
                   static_cast<unsigned long long>(version));
    }
    lock.lock();
    --retiring_now_;
    if (retry && ++attempts[{name, version}] < 30) {
      retire_changed_.wait_for(lock, options_.retire_retry, [&] { return stopping_; });
      retire_queue_.emplace_back(name, version);
    }
    retire_changed_.notify_all();
  }
}

}  // namespace expertmesh::router_service
