// The list of all metric definitions and its renderings (label lists, exposed series, JSON).
#include "engine/metrics/metric_catalog.h"

#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "engine/metrics/metric_definitions.h"
#include "nlohmann/json.hpp"

namespace expertmesh::metrics {
namespace {

using namespace definitions;  // NOLINT: the catalog lists them all.

constexpr std::array<const MetricDefinition*, 41> kAll = {
    &kGrpcServerStarted,  &kGrpcServerHandled,     &kGrpcServerHandlingSeconds, &kGrpcServerMsgReceived,
    &kGrpcServerMsgSent,  &kGrpcServerInFlight,    &kRequests,                  &kTimeToFirstToken,
    &kTimePerOutputToken, &kRequestDuration,       &kPromptTokens,              &kGenerationTokens,
    &kRequestPromptTokens, &kRequestGenerationTokens, &kRequestsRunning,        &kRequestsWaiting,
    &kAbSplitWeight,      &kAttentionFailovers,    &kKvCacheUsage,              &kKvCacheCapacity,
    &kStepBatchSize,      &kMoeFanoutSeconds,      &kMoeLayerFanoutSeconds,     &kMoeSentBytes,
    &kMoeReceivedBytes,   &kMoeShardFailovers,     &kMoeExpertTokens,           &kBlendWeightBytes,
    &kBlendVersion,       &kBlendSwaps,            &kBlendSwapSeconds,          &kDeviceMemoryUsed,
    &kDeviceMemoryTotal,  &kWeightResidentBytes,   &kServiceInfo,               &kProcessCpuSeconds,
    &kProcessResidentMemory, &kProcessVirtualMemory, &kProcessOpenFds,          &kProcessMaxFds,
    &kProcessStartTime,
};

}  // namespace

std::string_view MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

std::vector<std::string> LabelNames(const MetricDefinition& definition) {
  if (definition.labels.empty()) return {};
  return absl::StrSplit(absl::string_view(definition.labels.data(), definition.labels.size()), ',');
}

std::span<const MetricDefinition* const> AllMetricDefinitions() { return kAll; }

std::vector<std::string> ExposedSeriesNames(const MetricDefinition& definition) {
  std::string name(definition.name);
  if (definition.type != MetricType::kHistogram) return {name};
  return {name + "_bucket", name + "_sum", name + "_count"};
}

std::string CatalogAsJson() {
  nlohmann::json all = nlohmann::json::array();
  for (const MetricDefinition* definition : kAll) {
    nlohmann::json entry;
    entry["name"] = std::string(definition->name);
    entry["type"] = std::string(MetricTypeName(definition->type));
    entry["labels"] = LabelNames(*definition);
    entry["recorded_by"] = std::string(definition->recorded_by);
    entry["cardinality"] = std::string(definition->cardinality);
    entry["help"] = std::string(definition->help);
    entry["series"] = ExposedSeriesNames(*definition);
    entry["buckets"] = std::vector<double>(definition->buckets.begin(), definition->buckets.end());
    all.push_back(std::move(entry));
  }
  return all.dump(2);
}

std::string CatalogAsMarkdown() {
  std::string table =
      "| metric | type | labels | recorded by | series bound | meaning |\n"
      "| --- | --- | --- | --- | --- | --- |\n";
  for (const MetricDefinition* definition : kAll) {
    std::string labels = absl::StrJoin(LabelNames(*definition), ", ");
    absl::StrAppend(&table, "| `", std::string(definition->name), "` | ", std::string(MetricTypeName(definition->type)),
                    " | ", labels.empty() ? "-" : labels, " | ", std::string(definition->recorded_by), " | ",
                    std::string(definition->cardinality), " | ",
                    absl::StrReplaceAll(std::string(definition->help), {{"|", "\\|"}}), " |\n");
  }
  return table;
}

}  // namespace expertmesh::metrics
