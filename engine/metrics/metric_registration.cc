// Family registration from catalog definitions.
#include "engine/metrics/metric_registration.h"

#include <cstdio>
#include <cstdlib>

namespace expertmesh::metrics {
namespace {

void CheckType(const MetricDefinition& definition, MetricType expected) {
  if (definition.type == expected) return;
  std::fprintf(stderr, "metrics: %.*s is a %.*s, registered as a %.*s\n", static_cast<int>(definition.name.size()),
               definition.name.data(), static_cast<int>(MetricTypeName(definition.type).size()),
               MetricTypeName(definition.type).data(), static_cast<int>(MetricTypeName(expected).size()),
               MetricTypeName(expected).data());
  std::abort();
}

}  // namespace

prometheus::Family<prometheus::Counter>& RegisterCounter(prometheus::Registry& registry,
                                                         const MetricDefinition& definition) {
  CheckType(definition, MetricType::kCounter);
  return prometheus::BuildCounter()
      .Name(std::string(definition.name))
      .Help(std::string(definition.help))
      .Register(registry);
}

prometheus::Family<prometheus::Gauge>& RegisterGauge(prometheus::Registry& registry,
                                                     const MetricDefinition& definition) {
  CheckType(definition, MetricType::kGauge);
  return prometheus::BuildGauge().Name(std::string(definition.name)).Help(std::string(definition.help)).Register(registry);
}

prometheus::Family<prometheus::Histogram>& RegisterHistogram(prometheus::Registry& registry,
                                                             const MetricDefinition& definition) {
  CheckType(definition, MetricType::kHistogram);
  return prometheus::BuildHistogram()
      .Name(std::string(definition.name))
      .Help(std::string(definition.help))
      .Register(registry);
}

prometheus::Histogram::BucketBoundaries BucketsOf(const MetricDefinition& definition) {
  return prometheus::Histogram::BucketBoundaries(definition.buckets.begin(), definition.buckets.end());
}

prometheus::Labels LabelsFor(const MetricDefinition& definition, std::initializer_list<std::string> values) {
  std::vector<std::string> names = LabelNames(definition);
  if (names.size() != values.size()) {
    std::fprintf(stderr, "metrics: %.*s takes %zu labels, got %zu\n", static_cast<int>(definition.name.size()),
                 definition.name.data(), names.size(), values.size());
    std::abort();
  }
  prometheus::Labels labels;
  auto value = values.begin();
  for (const std::string& name : names) labels.emplace(name, *value++);
  return labels;
}

}  // namespace expertmesh::metrics
