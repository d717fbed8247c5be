// WeightSetDirectory: the attention tier's view of the weight sets the expert shards serve, used
// to pin a version for a sequence that names a blend without a version (or no blend: the
// default). A name is servable when every shard that answers reports it READY; if they disagree
// on its version (a commit is rolling across the shards) the lowest one is pinned, which every
// shard still holds. The default is the one most shards report. Refreshed from the shards'
// Describe in the background and at once (rate-limited) when a request names something unknown.
// Requests that come with a version (the router resolves versions itself) skip the directory.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "expertmesh/v1/expert_service.grpc.pb.h"

namespace expertmesh::attention_service {

struct WeightSetRef {
  std::string name;
  uint64_t version = 0;
};

// The servable sets (name -> version) and the default, from a list of shard descriptions.
struct WeightSetTable {
  std::map<std::string, uint64_t> versions;
  std::string default_name;
};
WeightSetTable BuildWeightSetTable(const std::vector<v1::ExpertShardDescription>& descriptions);

class WeightSetDirectory {
 public:
  // `initial`: the descriptions the fan-out got at start-up. Dials `addresses` for refreshes
  // (channels live as long as the directory).
  WeightSetDirectory(const std::vector<std::string>& addresses, const std::vector<v1::ExpertShardDescription>& initial,
                     std::chrono::milliseconds refresh_interval = std::chrono::milliseconds(1000));
  ~WeightSetDirectory();

  // `blend` ("" = the default) at the version to pin; NOT_FOUND naming what is served.
  absl::StatusOr<WeightSetRef> Resolve(const std::string& blend);
  // Describes every shard now and rebuilds the table from those that answered.
  void Refresh();
  WeightSetTable table() const;

 private:
  struct Shard {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::ExpertService::Stub> stub;
  };
  void RefreshLoop(std::chrono::milliseconds interval);

  std::vector<std::unique_ptr<Shard>> shards_;
  mutable std::mutex mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
  WeightSetTable table_;
  std::chrono::steady_clock::time_point last_refresh_{};
  std::mutex refresh_mutex_;  // one refresh at a time
  std::thread refresher_;
};

}  // namespace expertmesh::attention_service
