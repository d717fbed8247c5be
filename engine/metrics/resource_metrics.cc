// ResourceMetrics: device and weight memory gauges, service info.
#include "engine/metrics/resource_metrics.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "engine/metrics/label_limits.h"
#include "engine/metrics/metric_definitions.h"
#include "engine/metrics/metric_registration.h"

namespace expertmesh::metrics {
namespace d = definitions;

std::string DeviceLabel(std::string_view device) {
  if (device == "cpu") return "cpu";
  int index = -1;
  const std::string text(device);
  if (absl::StartsWith(text, "cuda:") && absl::SimpleAtoi(text.substr(5), &index) && index >= 0 &&
      index < kMaxDevices && device.substr(5) == std::to_string(index)) {
    return std::string(device);
  }
  return std::string(kOtherLabelValue);
}

ResourceMetrics::ResourceMetrics(prometheus::Registry& registry, std::string_view service, std::string_view version)
    : device_memory_used_(RegisterGauge(registry, d::kDeviceMemoryUsed)),
      device_memory_total_(RegisterGauge(registry, d::kDeviceMemoryTotal)),
      weight_resident_(RegisterGauge(registry, d::kWeightResidentBytes)) {
  RegisterGauge(registry, d::kServiceInfo)
      .Add(LabelsFor(d::kServiceInfo, {std::string(service), std::string(version)}))
      .Set(1);
}

void ResourceMetrics::SetDeviceMemory(std::string_view device, uint64_t used_bytes, uint64_t total_bytes) {
  prometheus::Labels labels = LabelsFor(d::kDeviceMemoryUsed, {DeviceLabel(device)});
  device_memory_used_.Add(labels).Set(static_cast<double>(used_bytes));
  device_memory_total_.Add(labels).Set(static_cast<double>(total_bytes));
}

void ResourceMetrics::SetWeightResidentBytes(std::string_view device, uint64_t bytes) {
  weight_resident_.Add(LabelsFor(d::kWeightResidentBytes, {DeviceLabel(device)})).Set(static_cast<double>(bytes));
}

}  // namespace expertmesh::metrics
