// ServingMetrics: request-level and step-level recording.
#include "engine/metrics/serving_metrics.h"

#include <map>

#include "engine/metrics/metric_definitions.h"
#include "engine/metrics/metric_registration.h"

namespace expertmesh::metrics {
namespace d = definitions;

std::string_view RequestFinishLabel(RequestFinish finish) {
  switch (finish) {
    case RequestFinish::kLength:
      return "length";
    case RequestFinish::kStop:
      return "stop";
    case RequestFinish::kAborted:
      return "aborted";
    case RequestFinish::kError:
      return "error";
    case RequestFinish::kRejected:
      return "rejected";
  }
  return "error";
}

ServingMetrics::ServingMetrics(prometheus::Registry& registry)
    : requests_(RegisterCounter(registry, d::kRequests)),
      time_to_first_token_(RegisterHistogram(registry, d::kTimeToFirstToken)),
      time_per_output_token_(RegisterHistogram(registry, d::kTimePerOutputToken)),
      request_duration_(RegisterHistogram(registry, d::kRequestDuration)),
      prompt_tokens_(RegisterCounter(registry, d::kPromptTokens)),
      generation_tokens_(RegisterCounter(registry, d::kGenerationTokens)),
      request_prompt_tokens_(RegisterHistogram(registry, d::kRequestPromptTokens)),
      request_generation_tokens_(RegisterHistogram(registry, d::kRequestGenerationTokens)),
      running_(RegisterGauge(registry, d::kRequestsRunning)),
      waiting_(RegisterGauge(registry, d::kRequestsWaiting).Add({})),
      ab_split_(RegisterGauge(registry, d::kAbSplitWeight)),
      attention_failovers_(RegisterCounter(registry, d::kAttentionFailovers).Add({})),
      kv_cache_usage_(RegisterGauge(registry, d::kKvCacheUsage).Add({})),
      kv_cache_capacity_(RegisterGauge(registry, d::kKvCacheCapacity).Add({})),
      step_batch_(RegisterHistogram(registry, d::kStepBatchSize)) {}

void ServingMetrics::RecordFinished(const FinishedRequest& request) {
  std::string blend = blends_.Admit(request.blend);
  prometheus::Labels by_blend = LabelsFor(d::kTimeToFirstToken, {blend});
  requests_.Add(LabelsFor(d::kRequests, {blend, std::string(RequestFinishLabel(request.finish))})).Increment();
  if (request.finish == RequestFinish::kRejected) return;
  prompt_tokens_.Add(by_blend).Increment(request.prompt_tokens);
  generation_tokens_.Add(by_blend).Increment(request.generated_tokens);
  request_prompt_tokens_.Add(by_blend, BucketsOf(d::kRequestPromptTokens)).Observe(request.prompt_tokens);
  request_generation_tokens_.Add(by_blend, BucketsOf(d::kRequestGenerationTokens)).Observe(request.generated_tokens);
  request_duration_.Add(by_blend, BucketsOf(d::kRequestDuration)).Observe(request.duration_seconds);
  if (request.time_to_first_token_seconds >= 0 && request.generated_tokens > 0) {
    time_to_first_token_.Add(by_blend, BucketsOf(d::kTimeToFirstToken)).Observe(request.time_to_first_token_seconds);
    if (request.generated_tokens >= 2 && request.duration_seconds >= request.time_to_first_token_seconds) {
      double per_token = (request.duration_seconds - request.time_to_first_token_seconds) /
                         static_cast<double>(request.generated_tokens - 1);
      time_per_output_token_.Add(by_blend, BucketsOf(d::kTimePerOutputToken)).Observe(per_token);
    }
  }
}

ServingMetrics::RunningRequest::RunningRequest(prometheus::Gauge* gauge) : gauge_(gauge) { gauge_->Increment(); }
ServingMetrics::RunningRequest::~RunningRequest() {
  if (gauge_ != nullptr) gauge_->Decrement();
}

ServingMetrics::RunningRequest ServingMetrics::TrackRunning(std::string_view blend) {
  return RunningRequest(&running_.Add(LabelsFor(d::kRequestsRunning, {blends_.Admit(blend)})));
}

void ServingMetrics::SetWaitingRequests(int64_t waiting) { waiting_.Set(static_cast<double>(waiting)); }

void ServingMetrics::SetAbSplit(const std::vector<std::pair<std::string, double>>& weights) {
  double total = 0;
  for (const auto& [blend, weight] : weights) total += weight > 0 ? weight : 0;
  std::map<std::string, double> shares;  // a blend named twice gets the sum of its shares
  for (const auto& [blend, weight] : weights) {
    shares[blends_.Admit(blend)] += (total > 0 && weight > 0) ? weight / total : 0;
  }
  // Blends of an earlier split that are not in this one drop to 0.
  for (const auto& family : ab_split_.Collect()) {
    for (const auto& metric : family.metric) {
      for (const auto& label : metric.label) {
        if (label.name == "blend") shares.emplace(label.value, 0.0);
      }
    }
  }
  for (const auto& [blend, share] : shares) ab_split_.Add(LabelsFor(d::kAbSplitWeight, {blend})).Set(share);
}

void ServingMetrics::RecordAttentionFailover() { attention_failovers_.Increment(); }

void ServingMetrics::SetKvCacheUsage(int64_t used_tokens, int64_t capacity_tokens) {
  kv_cache_capacity_.Set(static_cast<double>(capacity_tokens));
  kv_cache_usage_.Set(capacity_tokens > 0 ? static_cast<double>(used_tokens) / static_cast<double>(capacity_tokens) : 0);
}

void ServingMetrics::RecordStepBatch(std::string_view phase, int64_t sequences) {
  std::string phase_label = (phase == "prefill") ? "prefill" : "decode";
  step_batch_.Add(LabelsFor(d::kStepBatchSize, {phase_label}), BucketsOf(d::kStepBatchSize))
      .Observe(static_cast<double>(sequences));
}

}  // namespace expertmesh::metrics
