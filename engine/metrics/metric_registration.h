// Registers prometheus-cpp metric families from catalog definitions and builds label sets that
// follow a definition's label names, so every series matches what the catalog documents.
#pragma once

#include <initializer_list>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "engine/metrics/metric_catalog.h"

namespace expertmesh::metrics {

prometheus::Family<prometheus::Counter>& RegisterCounter(prometheus::Registry& registry,
                                                         const MetricDefinition& definition);
prometheus::Family<prometheus::Gauge>& RegisterGauge(prometheus::Registry& registry,
                                                     const MetricDefinition& definition);
prometheus::Family<prometheus::Histogram>& RegisterHistogram(prometheus::Registry& registry,
                                                             const MetricDefinition& definition);
prometheus::Histogram::BucketBoundaries BucketsOf(const MetricDefinition& definition);

// Pairs the definition's label names with `values`, in order. A count mismatch is a programming
// error: it aborts with the metric's name.
prometheus::Labels LabelsFor(const MetricDefinition& definition, std::initializer_list<std::string> values);

}  // namespace expertmesh::metrics
