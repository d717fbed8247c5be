// RouterServiceImpl: the public RouterService.Generate. Per request: validate and tokenize,
// pick a blend (BlendSelector), wait for admission (AdmissionQueue), run the sequence on the
// least-loaded healthy attention replica (AttentionPool; another replica is tried when one is
// UNAVAILABLE before any token arrived), and stream TokenDelta events (DeltaBuilder) and a final
// Usage. Client cancellation and deadlines propagate to the attention call.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "engine/metrics/serving_metrics.h"
#include "engine/tokenizer/tokenizer.h"
#include "expertmesh/v1/router_service.grpc.pb.h"
#include "router-svc/admission_queue.h"
#include "router-svc/attention_pool.h"
#include "router-svc/blend_selector.h"
#include "router-svc/request_validation.h"

namespace expertmesh::router_service {

struct RouterOptions {
  RequestLimits limits;
  // Requests generating at once, and requests allowed to wait for a slot.
  int max_running = 64;
  int max_waiting = 256;
  // One line per finished request on stderr.
  bool log_requests = true;
  // Request metrics (running, finished with latencies and tokens, failovers); null = none. Not owned.
  metrics::ServingMetrics* metrics = nullptr;
};

// What Run() tells about a request's end, for metrics.
struct RunOutcome {
  uint32_t completion_tokens = 0;
  double time_to_first_token_seconds = -1;  // negative: no token was sent
  // Set when a final Usage was sent; UNSPECIFIED when the request ended with an error instead.
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
};

class RouterServiceImpl final : public v1::RouterService::Service {
 public:
  // Not owned; all must outlive the service.
  RouterServiceImpl(const Tokenizer& tokenizer, AttentionPool& pool, BlendSelector& blends, RouterOptions options);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;

  // From now on new requests fail UNAVAILABLE (shutdown has begun); running ones finish.
  void StopAdmitting() { admitting_.store(false); }

  const AdmissionQueue& admission() const { return admission_; }

 private:
  // Runs the admitted request; writes deltas and usage; returns the RPC's final status.
  absl::Status Run(grpc::ServerContext* context, const ValidatedRequest& request, const BlendChoice& choice,
                   std::chrono::steady_clock::time_point arrival, grpc::ServerWriter<v1::GenerateResponse>* writer,
                   std::string* log_line, RunOutcome* outcome);

  const Tokenizer& tokenizer_;
  AttentionPool& pool_;
  BlendSelector& blends_;
  const RouterOptions options_;
  AdmissionQueue admission_;
  std::atomic<bool> admitting_{true};
};

}  // namespace expertmesh::router_service
