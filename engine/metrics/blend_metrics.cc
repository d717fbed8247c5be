// BlendMetrics: weight-set gauges and swap counters.
#include "engine/metrics/blend_metrics.h"

#include "engine/metrics/metric_definitions.h"
#include "engine/metrics/metric_registration.h"

namespace expertmesh::metrics {
namespace d = definitions;

BlendMetrics::BlendMetrics(prometheus::Registry& registry)
    : weight_bytes_(RegisterGauge(registry, d::kBlendWeightBytes)),
      version_(RegisterGauge(registry, d::kBlendVersion)),
      swaps_(RegisterCounter(registry, d::kBlendSwaps)),
      swap_seconds_(RegisterHistogram(registry, d::kBlendSwapSeconds)) {}

void BlendMetrics::SetWeightSet(std::string_view blend, uint64_t bytes, uint64_t version) {
  prometheus::Labels labels = LabelsFor(d::kBlendWeightBytes, {blends_.Admit(blend)});
  weight_bytes_.Add(labels).Set(static_cast<double>(bytes));
  version_.Add(labels).Set(static_cast<double>(version));
}

void BlendMetrics::ClearWeightSet(std::string_view blend) { SetWeightSet(blend, 0, 0); }

void BlendMetrics::RecordSwap(std::string_view blend, bool success, double seconds) {
  std::string label = blends_.Admit(blend);
  swaps_.Add(LabelsFor(d::kBlendSwaps, {label, success ? "success" : "failure"})).Increment();
  swap_seconds_.Add(LabelsFor(d::kBlendSwapSeconds, {label}), BucketsOf(d::kBlendSwapSeconds)).Observe(seconds);
}

}  // namespace expertmesh::metrics
