// MoE fan-out and per-expert load recording.
#include "engine/metrics/moe_metrics.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/metrics/label_limits.h"
#include "engine/metrics/metric_definitions.h"
#include "engine/metrics/metric_registration.h"

namespace expertmesh::metrics {
namespace d = definitions;

MoeFanoutMetrics::MoeFanoutMetrics(prometheus::Registry& registry, int num_shards)
    : layer_fanout_(RegisterHistogram(registry, d::kMoeLayerFanoutSeconds).Add({}, BucketsOf(d::kMoeLayerFanoutSeconds))) {
  auto& round_trip = RegisterHistogram(registry, d::kMoeFanoutSeconds);
  auto& sent = RegisterCounter(registry, d::kMoeSentBytes);
  auto& received = RegisterCounter(registry, d::kMoeReceivedBytes);
  auto& failovers = RegisterCounter(registry, d::kMoeShardFailovers);
  auto make = [&](const std::string& shard) {
    prometheus::Labels labels = LabelsFor(d::kMoeFanoutSeconds, {shard});
    return ShardSeries{&round_trip.Add(labels, BucketsOf(d::kMoeFanoutSeconds)), &sent.Add(labels),
                       &received.Add(labels), &failovers.Add(labels)};
  };
  num_shards = std::clamp(num_shards, 0, kMaxShardLabelValues);
  for (int shard = 0; shard < num_shards; ++shard) shards_.push_back(make(absl::StrCat(shard)));
  other_ = make(std::string(kOtherLabelValue));
}

const MoeFanoutMetrics::ShardSeries& MoeFanoutMetrics::Shard(int shard) {
  if (shard >= 0 && shard < static_cast<int>(shards_.size())) return shards_[shard];
  return other_;
}

void MoeFanoutMetrics::RecordShardRoundTrip(int shard, double seconds, uint64_t bytes_sent, uint64_t bytes_received) {
  const ShardSeries& series = Shard(shard);
  series.round_trip->Observe(seconds);
  series.bytes_sent->Increment(static_cast<double>(bytes_sent));
  series.bytes_received->Increment(static_cast<double>(bytes_received));
}

void MoeFanoutMetrics::RecordLayerFanout(double seconds) { layer_fanout_.Observe(seconds); }

void MoeFanoutMetrics::RecordShardFailover(int shard) { Shard(shard).failovers->Increment(); }

absl::StatusOr<std::unique_ptr<ExpertLoadMetrics>> ExpertLoadMetrics::Create(prometheus::Registry& registry,
                                                                             std::span<const int> layers,
                                                                             std::span<const int> experts) {
  auto metrics = std::unique_ptr<ExpertLoadMetrics>(new ExpertLoadMetrics());
  metrics->layer_slot_.assign(kMaxMoeLayers, -1);
  metrics->expert_slot_.assign(kMaxRoutedExperts, -1);
  std::vector<int> row_layers;
  std::vector<int> column_experts;
  for (int layer : layers) {
    if (layer < 0 || layer >= kMaxMoeLayers) {
      return absl::InvalidArgumentError(absl::StrCat("expert load metrics: layer ", layer, " outside 0..", kMaxMoeLayers - 1));
    }
    if (metrics->layer_slot_[layer] >= 0) continue;
    metrics->layer_slot_[layer] = static_cast<int>(row_layers.size());
    row_layers.push_back(layer);
  }
  for (int expert : experts) {
    if (expert < 0 || expert >= kMaxRoutedExperts) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert load metrics: expert ", expert, " outside 0..", kMaxRoutedExperts - 1));
    }
    if (metrics->expert_slot_[expert] >= 0) continue;
    metrics->expert_slot_[expert] = static_cast<int>(column_experts.size());
    column_experts.push_back(expert);
  }
  metrics->num_columns_ = static_cast<int>(column_experts.size());
  auto& family = RegisterCounter(registry, d::kMoeExpertTokens);
  for (int layer : row_layers) {
    for (int expert : column_experts) {
      metrics->counters_.push_back(
          &family.Add(LabelsFor(d::kMoeExpertTokens, {absl::StrCat(layer), absl::StrCat(expert)})));
    }
  }
  return metrics;
}

int64_t ExpertLoadMetrics::RecordTokens(int layer, std::span<const int32_t> expert_ids) {
  int row = (layer >= 0 && layer < kMaxMoeLayers) ? layer_slot_[layer] : -1;
  int64_t not_hosted = 0;
  // Few distinct experts per message: count locally, then one atomic add per expert.
  std::map<int, int64_t> counts;
  for (int32_t expert : expert_ids) {
    if (expert == -1) continue;
    int column = (expert >= 0 && expert < kMaxRoutedExperts) ? expert_slot_[expert] : -1;
    if (row < 0 || column < 0) {
      ++not_hosted;
      continue;
    }
    ++counts[column];
  }
  for (const auto& [column, count] : counts) {
    counters_[static_cast<size_t>(row) * num_columns_ + column]->Increment(static_cast<double>(count));
  }
  return not_hosted;
}

}  // namespace expertmesh::metrics
