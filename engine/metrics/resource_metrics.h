// ResourceMetrics: device memory in use and capacity per accelerator, model weight bytes
// resident per device ("cpu" or "cuda:N"), and the service's info series. Device labels other
// than "cpu" and "cuda:0".."cuda:15" are recorded as "other".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <prometheus/registry.h>

namespace expertmesh::metrics {

// "cpu", "cuda:N" (N < kMaxDevices) or "other".
std::string DeviceLabel(std::string_view device);

class ResourceMetrics {
 public:
  // `service`: "router", "attention" or "expert"; `version`: the build's version string.
  ResourceMetrics(prometheus::Registry& registry, std::string_view service, std::string_view version);

  void SetDeviceMemory(std::string_view device, uint64_t used_bytes, uint64_t total_bytes);
  void SetWeightResidentBytes(std::string_view device, uint64_t bytes);

 private:
  prometheus::Family<prometheus::Gauge>& device_memory_used_;
  prometheus::Family<prometheus::Gauge>& device_memory_total_;
  prometheus::Family<prometheus::Gauge>& weight_resident_;
};

}  // namespace expertmesh::metrics
