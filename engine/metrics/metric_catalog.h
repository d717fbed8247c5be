// The catalog of every metric ExpertMesh exports: name, type, labels, unit, bucket layout, who
// records it and the bound on its label cardinality. The metric groups register from these
// definitions, docs/metrics.md documents them and the dashboard test checks PromQL against them.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace expertmesh::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };

struct MetricDefinition {
  std::string_view name;
  MetricType type;
  // Comma-separated label names ("" = none).
  std::string_view labels;
  // Which service records it: "all", "router", "attention", "expert".
  std::string_view recorded_by;
  // Upper bound on the number of label combinations (series; histograms count one per
  // combination), as text with the reason.
  std::string_view cardinality;
  std::string_view help;
  // Histogram upper bounds (empty for counters and gauges).
  std::span<const double> buckets = {};
};

std::string_view MetricTypeName(MetricType type);
std::vector<std::string> LabelNames(const MetricDefinition& definition);
// Every definition, in documentation order.
std::span<const MetricDefinition* const> AllMetricDefinitions();
// Names of the series a scrape shows for `definition` (histograms: _bucket, _sum, _count).
std::vector<std::string> ExposedSeriesNames(const MetricDefinition& definition);
// The catalog as a JSON document (for tools and tests): [{"name", "type", "labels": [...], ...}].
std::string CatalogAsJson();
// The catalog as a Markdown table (embedded in docs/metrics.md; a test keeps them equal).
std::string CatalogAsMarkdown();

}  // namespace expertmesh::metrics
