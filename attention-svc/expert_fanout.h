// ExpertFanout: the RoutedExperts implementation of the attention tier. It builds the
// layer -> expert -> shard-group table from every shard's Describe (start-up fails if an expert
// of an MoE layer has no shard), then for each call groups the tokens by shard group, sends all
// groups' requests concurrently on the persistent streams, and adds the replies into the output
// in group order (so the float sums do not depend on which reply came first). ComputeAsync sends
// at once and gathers when waited on, so the caller can overlap the round trip with other work.
// Replicas (shards hosting the same experts) are balanced round-robin; a replica that breaks
// mid-call is failed over to the next healthy one. A reconnect thread re-dials broken replicas.
// Weight sets: Pinned(name, version) is the same fan-out with every request naming that set and
// version (a sequence keeps one for its whole life); a reply from any other set or version fails
// the call (INTERNAL), so a sequence never mixes blends or versions across shards.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "attention-svc/shard_connection.h"
#include "attention-svc/weight_set_directory.h"
#include "engine/format/model_config.h"
#include "engine/metrics/moe_metrics.h"
#include "engine/model/routed_experts.h"

namespace expertmesh::attention_service {

struct FanoutOptions {
  std::chrono::milliseconds connect_timeout{10000};
  // Upper bound for one layer's expert round trip; past it the call fails DEADLINE_EXCEEDED.
  std::chrono::milliseconds layer_timeout{30000};
  v1::TensorDType wire_dtype = v1::TENSOR_DTYPE_F32;
  // How often broken replicas are re-dialled.
  std::chrono::milliseconds reconnect_interval{500};
  // Per-shard round trips and bytes, whole-layer fan-out time and failovers (a replica lost while
  // another replica of its shard is healthy; shard label = the replica's position in the address
  // list); null = none. Not owned.
  metrics::MoeFanoutMetrics* metrics = nullptr;
};

class ExpertFanout : public RoutedExperts {
 public:
  // Connects to every address and validates the placement against `config`.
  static absl::StatusOr<std::unique_ptr<ExpertFanout>> Create(const ModelConfig& config,
                                                              const std::vector<std::string>& addresses,
                                                              FanoutOptions options);
  ~ExpertFanout() override;

  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override;
  std::future<absl::Status> ComputeAsync(const RoutedExpertBatch& batch, std::span<float> output) override;

  int num_replicas() const { return static_cast<int>(connections_.size()); }
  int num_healthy_replicas() const;
  // Shard groups (distinct hosted sets) with no healthy replica now.
  int num_unreachable_groups() const;
  std::vector<std::string> addresses() const;
  const std::vector<std::unique_ptr<ShardConnection>>& connections() const { return connections_; }
  // The default weight set the shards reported at start-up (name, version).
  const v1::WeightSetInfo& default_weight_set() const { return default_weight_set_; }

  // `blend` ("" = the default) at the version the shards serve now (WeightSetDirectory).
  absl::StatusOr<WeightSetRef> ResolveWeightSet(const std::string& blend) const;
  // Experts computing with weight set `name` at `version` (0 = whatever the shards resolve the
  // name to per call, unpinned). Equal arguments give the same object while it is held.
  std::shared_ptr<RoutedExperts> Pinned(const std::string& name, uint64_t version) const;

 private:
  // Replicas that host the same experts.
  struct ShardGroup {
    std::vector<ShardConnection*> replicas;
    std::atomic<uint32_t> next_replica{0};
  };

  // One ComputeAsync in progress (shared with the deferred gather).
  struct Call;
  struct GroupCall;
  class PinnedExperts;

  ExpertFanout() = default;
  absl::Status BuildPlacement(const ModelConfig& config);
  absl::Status CheckWeightSets();
  void ReconnectLoop();
  std::future<absl::Status> ComputeAsyncFor(const WeightSetRef& weight_set, const RoutedExpertBatch& batch,
                                            std::span<float> output);
  absl::Status Start(Call& call);
  absl::Status Gather(Call& call);
  // Sends the group's request to its next untried healthy replica; false if none is left.
  bool SendToNextReplica(Call& call, GroupCall& group);

  FanoutOptions options_;
  int64_t num_experts_ = 0;
  std::vector<std::unique_ptr<ShardConnection>> connections_;
  std::vector<std::unique_ptr<ShardGroup>> groups_;
  // group_of_expert_[layer][expert] -> index into groups_ (-1 for non-MoE layers).
  std::vector<std::vector<int>> group_of_expert_;
  v1::WeightSetInfo default_weight_set_;
  std::unique_ptr<WeightSetDirectory> directory_;
  mutable std::mutex pinned_mutex_;
  mutable std::map<std::pair<std::string, uint64_t>, std::weak_ptr<RoutedExperts>> pinned_;
  std::atomic<bool> stopping_{false};
  std::thread reconnector_;
};

// Expands a shard list: "host:port,host:port", or "dns:NAME:PORT" (every address NAME resolves
// to, e.g. a headless Kubernetes Service), or "@FILE" (one entry per line).
absl::StatusOr<std::vector<std::string>> ResolveShardAddresses(const std::string& spec);

}  // namespace expertmesh::attention_service
