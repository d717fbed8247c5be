// ProcessCollector: the standard process_* metrics (CPU seconds, resident and virtual memory,
// open and maximum file descriptors, start time), read from /proc/self at every scrape.
#pragma once

#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace expertmesh::metrics {

class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace expertmesh::metrics
