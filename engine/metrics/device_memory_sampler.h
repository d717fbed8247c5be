// DeviceMemorySampler: keeps the device memory gauges (expertmesh_device_memory_used/total_bytes)
// current. It owns a background thread that calls each device's probe every interval and records
// the answer under the device's label. ReadHostMemory is the probe of the "cpu" device (host memory
// from /proc/meminfo); a GPU backend adds a probe for its "cuda:N" device (cudaMemGetInfo).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/metrics/resource_metrics.h"

namespace expertmesh::metrics {

struct DeviceMemory {
  uint64_t used_bytes = 0;
  uint64_t total_bytes = 0;
};
using DeviceMemoryProbe = std::function<absl::StatusOr<DeviceMemory>()>;

// Host memory: total = MemTotal, used = MemTotal - MemAvailable (what other processes could not
// get without swapping), from a /proc/meminfo-format file. NOT_FOUND / DATA_LOSS when unreadable.
absl::StatusOr<DeviceMemory> ReadHostMemory(const std::string& meminfo_path = "/proc/meminfo");

class DeviceMemorySampler {
 public:
  // Records into `resources` (which must outlive the sampler) every `interval`.
  DeviceMemorySampler(ResourceMetrics& resources, std::chrono::milliseconds interval);
  ~DeviceMemorySampler();  // stops and joins the thread

  // Samples `probe` once now (its error is returned and the device is still sampled later), then
  // every interval. The thread starts with the first device. A probe failing later leaves the
  // last value.
  absl::Status AddDevice(std::string_view device, DeviceMemoryProbe probe);

 private:
  struct Device {
    std::string label;
    DeviceMemoryProbe probe;
  };
  void Loop();
  void SampleAll();

  ResourceMetrics& resources_;
  const std::chrono::milliseconds interval_;
  std::mutex mutex_;  // guards devices_ and stopping_
  std::condition_variable wake_;
  std::vector<Device> devices_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace expertmesh::metrics
