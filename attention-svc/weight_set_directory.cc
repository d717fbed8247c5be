// WeightSetDirectory: table building from shard descriptions, refreshes, resolution.
#include "attention-svc/weight_set_directory.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attention-svc/shard_connection.h"

namespace expertmesh::attention_service {

WeightSetTable BuildWeightSetTable(const std::vector<v1::ExpertShardDescription>& descriptions) {
  WeightSetTable table;
  if (descriptions.empty()) return table;
  // name -> (shards reporting it, lowest version)
  std::map<std::string, std::pair<size_t, uint64_t>> seen;
  std::map<std::string, size_t> defaults;
  for (const auto& description : descriptions) {
    for (const auto& weight_set : description.weight_sets()) {
      auto [entry, inserted] = seen.emplace(weight_set.name(), std::make_pair(size_t{0}, weight_set.version()));
      ++entry->second.first;
      entry->second.second = std::min(entry->second.second, weight_set.version());
      if (weight_set.is_default()) ++defaults[weight_set.name()];
    }
  }
  for (const auto& [name, count_and_version] : seen) {
    if (count_and_version.first == descriptions.size()) table.versions[name] = count_and_version.second;
  }
  size_t best = 0;
  for (const auto& [name, count] : defaults) {
    if (count > best && table.versions.contains(name)) {
      best = count;
      table.default_name = name;
    }
  }
  return table;
}

WeightSetDirectory::WeightSetDirectory(const std::vector<std::string>& addresses,
                                       const std::vector<v1::ExpertShardDescription>& initial,
                                       std::chrono::milliseconds refresh_interval) {
  for (const std::string& address : addresses) {
    auto shard = std::make_unique<Shard>();
    shard->address = address;
    shard->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), ShardChannelArguments());
    shard->stub = v1::ExpertService::NewStub(shard->channel);
    shards_.push_back(std::move(shard));
  }
  table_ = BuildWeightSetTable(initial);
  last_refresh_ = std::chrono::steady_clock::now();
  refresher_ = std::thread([this, refresh_interval] { RefreshLoop(refresh_interval); });
}

WeightSetDirectory::~WeightSetDirectory() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_.notify_all();
  refresher_.join();
}

void WeightSetDirectory::RefreshLoop(std::chrono::milliseconds interval) {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    if (stop_.wait_for(lock, interval, [&] { return stopping_; })) return;
    lock.unlock();
    Refresh();
    lock.lock();
  }
}

void WeightSetDirectory::Refresh() {
  std::lock_guard<std::mutex> one_at_a_time(refresh_mutex_);
  std::vector<v1::ExpertShardDescription> answers(shards_.size());
  std::vector<grpc::Status> statuses(shards_.size());
  std::vector<std::thread> calls;
  for (size_t i = 0; i < shards_.size(); ++i) {
    calls.emplace_back([&, i] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1000));
      statuses[i] = shards_[i]->stub->Describe(&context, v1::DescribeExpertShardRequest(), &answers[i]);
    });
  }
  for (auto& call : calls) call.join();
  std::vector<v1::ExpertShardDescription> answered;
  for (size_t i = 0; i < shards_.size(); ++i) {
    if (statuses[i].ok()) answered.push_back(std::move(answers[i]));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  last_refresh_ = std::chrono::steady_clock::now();
  if (!answered.empty()) table_ = BuildWeightSetTable(answered);
}

WeightSetTable WeightSetDirectory::table() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return table_;
}

absl::StatusOr<WeightSetRef> WeightSetDirectory::Resolve(const std::string& blend) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const std::string& name = blend.empty() ? table_.default_name : blend;
      auto found = table_.versions.find(name);
      if (!name.empty() && found != table_.versions.end()) return WeightSetRef{name, found->second};
      // Unknown: look again, at most every 50 ms (bad requests must not storm the shards).
      if (attempt == 1 || std::chrono::steady_clock::now() - last_refresh_ < std::chrono::milliseconds(50)) {
        std::vector<std::string> served;
        for (const auto& [known, version] : table_.versions) served.push_back(absl::StrCat("'", known, "' v", version));
        if (blend.empty()) {
          return absl::UnavailableError(absl::StrCat("the expert shards agree on no default weight set (they serve ",
                                                     absl::StrJoin(served, ", "), ")"));
        }
        return absl::NotFoundError(absl::StrCat("blend '", blend, "' is not served by the expert shards (they serve ",
                                                absl::StrJoin(served, ", "), ")"));
      }
    }
    Refresh();
  }
  return absl::InternalError("unreachable");
}

}  // namespace expertmesh::attention_service
