// AttentionPool: router-svc's view of the attention replicas. Owns one channel and stub per
// replica, probes each (grpc.health.v1 Check + Describe) in a background thread, tracks the
// requests outstanding on each, and hands out the least-loaded healthy replica as a Lease. A
// replica whose call fails UNAVAILABLE is benched at once until a probe finds it healthy again.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "expertmesh/v1/attention_service.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace expertmesh::router_service {

struct AttentionPoolOptions {
  std::chrono::milliseconds probe_interval{500};
  // A replica that does not answer within this is unhealthy (also bounds Create's first probe).
  std::chrono::milliseconds probe_timeout{1000};
};

// What the router needs to know about the model behind the replicas (from Describe).
struct AttentionModelInfo {
  std::string model_type;
  uint32_t vocab_size = 0;
  uint32_t max_position_embeddings = 0;
};

// One replica's state, for logs, tests and metrics.
struct ReplicaSnapshot {
  std::string address;
  bool healthy = false;
  int outstanding = 0;
  uint64_t requests_started = 0;
};

class AttentionPool {
 private:
  struct Replica;

 public:
  // Probes every replica once (so a pool that can serve is ready on return), then keeps probing
  // in the background. Never fails for unreachable replicas: they are probed until they come up.
  static std::unique_ptr<AttentionPool> Create(const std::vector<std::string>& addresses,
                                               AttentionPoolOptions options = {});
  ~AttentionPool();
  AttentionPool(const AttentionPool&) = delete;
  AttentionPool& operator=(const AttentionPool&) = delete;

  // A replica reserved for one request; releases its outstanding count when destroyed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept : replica_(other.replica_), index_(other.index_) { other.replica_ = nullptr; }
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    v1::AttentionService::Stub* stub() const;
    const std::string& address() const;
    int index() const { return index_; }

   private:
    friend class AttentionPool;
    Lease(Replica* replica, int index) : replica_(replica), index_(index) {}
    Replica* replica_ = nullptr;
    int index_ = -1;
  };

  // The healthy replica with the fewest outstanding requests (ties rotate), skipping replicas in
  // `excluded`. UNAVAILABLE when none is healthy.
  absl::StatusOr<Lease> Acquire(const std::set<int>& excluded = {});
  // The call on this replica failed UNAVAILABLE: bench it until a probe succeeds.
  void ReportUnavailable(int index);

  // UNAVAILABLE until some replica has answered Describe.
  absl::StatusOr<AttentionModelInfo> model_info() const;
  int num_replicas() const { return static_cast<int>(replicas_.size()); }
  int num_healthy() const;
  std::vector<ReplicaSnapshot> Snapshot() const;
  // Blocks until at least one replica is healthy or `timeout` passes; returns whether one is.
  bool WaitForHealthy(std::chrono::milliseconds timeout);
  // Probes every replica now (in parallel) and waits for the answers.
  void ProbeAll();

 private:
  struct Replica {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::AttentionService::Stub> stub;
    std::unique_ptr<grpc::health::v1::Health::Stub> health;
    std::atomic<bool> healthy{false};
    std::atomic<int> outstanding{0};
    std::atomic<uint64_t> requests_started{0};
  };

  explicit AttentionPool(AttentionPoolOptions options) : options_(options) {}
  void Probe(Replica& replica);
  void ProbeLoop();

  const AttentionPoolOptions options_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::atomic<uint32_t> rotation_{0};

  mutable std::mutex mutex_;  // guards model_info_, stopping_
  std::condition_variable changed_;
  bool described_ = false;
  AttentionModelInfo model_info_;
  bool stopping_ = false;
  std::thread prober_;
};

}  // namespace expertmesh::router_service
