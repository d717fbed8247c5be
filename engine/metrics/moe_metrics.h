// MoE metrics. MoeFanoutMetrics: what the attention tier records per MoE layer and expert shard
// (round-trip latency, bytes each way, replica failovers). ExpertLoadMetrics: what an expert
// shard records per routed token-slot (tokens per expert per layer), over a dense table created
// up front for the experts it hosts, so the hot path is an array index and an atomic add.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/statusor.h"

namespace expertmesh::metrics {

class MoeFanoutMetrics {
 public:
  // Series for shards 0 .. num_shards-1 (at most kMaxShardLabelValues) are created up front.
  MoeFanoutMetrics(prometheus::Registry& registry, int num_shards);

  // One layer's request to `shard`: send-to-reply time and the payload bytes each way.
  void RecordShardRoundTrip(int shard, double seconds, uint64_t bytes_sent, uint64_t bytes_received);
  // A whole MoE layer's fan-out, first send to last reply.
  void RecordLayerFanout(double seconds);
  // `shard`'s traffic moved to another replica.
  void RecordShardFailover(int shard);

 private:
  struct ShardSeries {
    prometheus::Histogram* round_trip = nullptr;
    prometheus::Counter* bytes_sent = nullptr;
    prometheus::Counter* bytes_received = nullptr;
    prometheus::Counter* failovers = nullptr;
  };
  const ShardSeries& Shard(int shard);

  std::vector<ShardSeries> shards_;
  ShardSeries other_;  // shard indices outside 0 .. num_shards-1
  prometheus::Histogram& layer_fanout_;
};

class ExpertLoadMetrics {
 public:
  // `layers`: MoE layer indices this shard hosts experts of; `experts`: the global ids of its
  // experts. INVALID_ARGUMENT beyond kMaxMoeLayers / kMaxRoutedExperts or for negative values.
  static absl::StatusOr<std::unique_ptr<ExpertLoadMetrics>> Create(prometheus::Registry& registry,
                                                                   std::span<const int> layers,
                                                                   std::span<const int> experts);

  // Counts one token-slot for each id in `expert_ids` (-1 = unused slot, skipped). Returns the
  // number of ids that are not hosted here for `layer` (not counted).
  int64_t RecordTokens(int layer, std::span<const int32_t> expert_ids);

 private:
  ExpertLoadMetrics() = default;
  std::vector<int> layer_slot_;   // layer index -> row, or -1
  std::vector<int> expert_slot_;  // global expert id -> column, or -1
  int num_columns_ = 0;
  std::vector<prometheus::Counter*> counters_;  // row-major [row][column]
};

}  // namespace expertmesh::metrics
