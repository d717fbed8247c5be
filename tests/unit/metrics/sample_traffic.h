// SampleTraffic: every metric group of one process on one registry, and a deterministic
// synthetic workload that gives every catalog metric at least one series (two blends, two
// shards, experts of two layers, swaps, devices). Used by the catalog test and by the dashboard
// harness's exporter (tests/dashboard).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/metrics/blend_metrics.h"
#include "engine/metrics/moe_metrics.h"
#include "engine/metrics/service_metrics.h"
#include "engine/metrics/serving_metrics.h"

namespace expertmesh::metrics::testing {

class SampleTraffic {
 public:
  explicit SampleTraffic(ServiceMetrics& service);
  // Records one round of requests, steps, fan-outs and swaps; `round` varies the values.
  void RecordRound(int64_t round);

  ServingMetrics& serving() { return serving_; }

 private:
  ServiceMetrics& service_;
  ServingMetrics serving_;
  MoeFanoutMetrics fanout_;
  std::unique_ptr<ExpertLoadMetrics> expert_load_;
  BlendMetrics blends_;
  std::vector<ServingMetrics::RunningRequest> running_;  // destroyed before serving_'s gauges
};

}  // namespace expertmesh::metrics::testing
