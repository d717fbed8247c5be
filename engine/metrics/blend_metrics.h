// BlendMetrics: what an expert shard records about its weight sets (parent checkpoints and
// Assembly-of-Experts blends): memory held and version of each loaded set, and every load or
// swap with its duration and outcome. Blend labels are bounded (label_limits.h).
#pragma once

#include <cstdint>
#include <string_view>

#include <prometheus/registry.h>

#include "engine/metrics/label_limits.h"

namespace expertmesh::metrics {

class BlendMetrics {
 public:
  explicit BlendMetrics(prometheus::Registry& registry);

  // A weight set is loaded (or replaced) with this size and version.
  void SetWeightSet(std::string_view blend, uint64_t bytes, uint64_t version);
  // The weight set was unloaded: its memory and version series drop to 0.
  void ClearWeightSet(std::string_view blend);
  // One load or swap attempt of `blend`, successful or not, that took `seconds`.
  void RecordSwap(std::string_view blend, bool success, double seconds);

 private:
  BoundedLabelValues blends_{kMaxBlendLabelValues};
  prometheus::Family<prometheus::Gauge>& weight_bytes_;
  prometheus::Family<prometheus::Gauge>& version_;
  prometheus::Family<prometheus::Counter>& swaps_;
  prometheus::Family<prometheus::Histogram>& swap_seconds_;
};

}  // namespace expertmesh::metrics
