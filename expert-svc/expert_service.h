// ExpertServiceImpl: the gRPC face of an ExpertShard. Compute is a long-lived bidirectional
// stream: the handler thread reads requests into a bounded queue (stamping their arrival) and a
// worker per stream validates, computes and answers them in order. Errors are per message (one bad
// message does not tear down a stream other layers use); a message whose timeout_micros passed
// while it waited is answered DEADLINE_EXCEEDED without computing; a cancelled stream stops.
// Draining (SIGTERM): Describe and every new request answer UNAVAILABLE, which makes the attention
// tier fail over to another replica and drop its stream; requests already computing finish.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "engine/metrics/moe_metrics.h"
#include "expert-svc/expert_shard.h"
#include "expertmesh/v1/expert_service.grpc.pb.h"

namespace expertmesh::expert_service {

class ExpertServiceImpl final : public v1::ExpertService::Service {
 public:
  // `shard` must outlive the service. `max_queued_requests` bounds what one stream may have
  // waiting; past it reading pauses (flow control pushes back on the sender).
  explicit ExpertServiceImpl(const ExpertShard* shard, size_t max_queued_requests = 64)
      : shard_(shard), max_queued_requests_(max_queued_requests) {}

  grpc::Status Compute(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::ExpertReply, v1::ExpertRequest>* stream) override;
  grpc::Status Describe(grpc::ServerContext* context, const v1::DescribeExpertShardRequest* request,
                        v1::ExpertShardDescription* response) override;

  // Requests answered (successfully or not) since start, over all streams.
  uint64_t requests_answered() const { return requests_answered_.load(); }

  void StartDraining() { draining_ = true; }
  // Counts the token-slots of every successfully computed request per layer and expert. Set before
  // serving; not owned.
  void set_load_metrics(metrics::ExpertLoadMetrics* load_metrics) { load_metrics_ = load_metrics; }
  // Waits until no request is queued or computing (or `timeout` passes); true if idle.
  bool WaitIdle(std::chrono::milliseconds timeout) const;

 private:
  const ExpertShard* shard_;
  size_t max_queued_requests_;
  std::atomic<uint64_t> requests_answered_{0};
  std::atomic<int64_t> requests_in_progress_{0};
  std::atomic<bool> draining_{false};
  metrics::ExpertLoadMetrics* load_metrics_ = nullptr;
};

}  // namespace expertmesh::expert_service
