// ServingMetrics: what the router records per Generate request (TTFT, time per output token,
// end-to-end latency, prompt/generated tokens, requests by blend and finish reason, running and
// waiting requests, the configured A/B split, attention failovers) and what the attention tier
// records per step (KV cache usage, batch size). Blend labels are bounded (label_limits.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <prometheus/registry.h>

#include "engine/metrics/label_limits.h"

namespace expertmesh::metrics {

// kRejected: refused at admission (queue full, or deadline/cancel while waiting for a slot); such
// a request never ran, so it counts only in requests_total.
enum class RequestFinish { kLength, kStop, kAborted, kError, kRejected };
std::string_view RequestFinishLabel(RequestFinish finish);

struct FinishedRequest {
  // The blend that served the request ("" = the default weight set).
  std::string_view blend;
  RequestFinish finish = RequestFinish::kLength;
  uint32_t prompt_tokens = 0;
  uint32_t generated_tokens = 0;
  // Arrival to first token sent; negative when no token was sent.
  double time_to_first_token_seconds = -1;
  // Arrival to the end of the response.
  double duration_seconds = 0;
};

class ServingMetrics {
 public:
  explicit ServingMetrics(prometheus::Registry& registry);

  // Records a finished request: requests_total, token counters and the latency histograms (time
  // per output token = (duration - TTFT) / (generated - 1), only when generated >= 2). A rejected
  // request counts in requests_total alone (its wait is not a request duration).
  void RecordFinished(const FinishedRequest& request);

  // Counts a request as running under `blend` for the lifetime of the returned object.
  class RunningRequest {
   public:
    RunningRequest(RunningRequest&& other) noexcept : gauge_(std::exchange(other.gauge_, nullptr)) {}
    RunningRequest(const RunningRequest&) = delete;
    RunningRequest& operator=(const RunningRequest&) = delete;
    ~RunningRequest();

   private:
    friend class ServingMetrics;
    explicit RunningRequest(prometheus::Gauge* gauge);
    prometheus::Gauge* gauge_;
  };
  RunningRequest TrackRunning(std::string_view blend);

  void SetWaitingRequests(int64_t waiting);
  // The A/B split's weights by blend (normalised here to shares summing to 1). Blends of an
  // earlier split that are no longer in it are set to 0.
  void SetAbSplit(const std::vector<std::pair<std::string, double>>& weights);
  void RecordAttentionFailover();

  // Attention tier.
  void SetKvCacheUsage(int64_t used_tokens, int64_t capacity_tokens);
  // phase: "prefill" or "decode".
  void RecordStepBatch(std::string_view phase, int64_t sequences);

  // The label value used for `blend` (bounded; for tests).
  std::string BlendLabel(std::string_view blend) { return blends_.Admit(blend); }

 private:
  BoundedLabelValues blends_{kMaxBlendLabelValues};
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& time_to_first_token_;
  prometheus::Family<prometheus::Histogram>& time_per_output_token_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& generation_tokens_;
  prometheus::Family<prometheus::Histogram>& request_prompt_tokens_;
  prometheus::Family<prometheus::Histogram>& request_generation_tokens_;
  prometheus::Family<prometheus::Gauge>& running_;
  prometheus::Gauge& waiting_;
  prometheus::Family<prometheus::Gauge>& ab_split_;
  prometheus::Counter& attention_failovers_;
  prometheus::Gauge& kv_cache_usage_;
  prometheus::Gauge& kv_cache_capacity_;
  prometheus::Family<prometheus::Histogram>& step_batch_;
};

}  // namespace expertmesh::metrics
