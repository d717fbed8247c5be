// DeviceMemorySampler: /proc/meminfo parsing and the periodic sampling thread.
#include "engine/metrics/device_memory_sampler.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace expertmesh::metrics {

absl::StatusOr<DeviceMemory> ReadHostMemory(const std::string& meminfo_path) {
  std::ifstream file(meminfo_path);
  if (!file) return absl::NotFoundError(absl::StrCat("cannot read ", meminfo_path));
  uint64_t total_kib = 0, available_kib = 0;
  bool have_total = false, have_available = false;
  for (std::string line; std::getline(file, line);) {
    std::istringstream fields(line);
    std::string key, unit;
    uint64_t value = 0;
    if (!(fields >> key >> value)) continue;
    fields >> unit;
    if (key == "MemTotal:" && unit == "kB") {
      total_kib = value;
      have_total = true;
    } else if (key == "MemAvailable:" && unit == "kB") {
      available_kib = value;
      have_available = true;
    }
  }
  if (!have_total || !have_available || available_kib > total_kib || total_kib == 0) {
    return absl::DataLossError(absl::StrCat(meminfo_path, " has no usable MemTotal/MemAvailable (in kB)"));
  }
  return DeviceMemory{(total_kib - available_kib) * 1024, total_kib * 1024};
}

DeviceMemorySampler::DeviceMemorySampler(ResourceMetrics& resources, std::chrono::milliseconds interval)
    : resources_(resources), interval_(interval) {}

DeviceMemorySampler::~DeviceMemorySampler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status DeviceMemorySampler::AddDevice(std::string_view device, DeviceMemoryProbe probe) {
  absl::StatusOr<DeviceMemory> first = probe();
  const std::string label = DeviceLabel(device);
  if (first.ok()) resources_.SetDeviceMemory(label, first->used_bytes, first->total_bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  devices_.push_back(Device{label, std::move(probe)});
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
  return first.ok() ? absl::OkStatus() : first.status();
}

void DeviceMemorySampler::SampleAll() {
  std::vector<Device> devices;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    devices = devices_;
  }
  for (const Device& device : devices) {
    absl::StatusOr<DeviceMemory> memory = device.probe();
    if (memory.ok()) resources_.SetDeviceMemory(device.label, memory->used_bytes, memory->total_bytes);
  }
}

void DeviceMemorySampler::Loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!wake_.wait_for(lock, interval_, [this] { return stopping_; })) {
    lock.unlock();
    SampleAll();
    lock.lock();
  }
}

}  // namespace expertmesh::metrics
