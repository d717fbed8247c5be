// Host-side CUDA helpers: device discovery (so GPU code paths and tests can skip cleanly on
// machines without a GPU), error mapping to absl::Status, and DeviceBuffer, an owning device
// allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace expertmesh::cuda {

// OK when at least one usable CUDA device is present; otherwise UNAVAILABLE with the reason
// ("no CUDA driver", "no device", ...).
absl::Status CheckDeviceAvailable();
// How many CUDA devices this process sees (UNAVAILABLE as CheckDeviceAvailable when none).
absl::StatusOr<int> DeviceCount();
// "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" for device 0 (or `index`).
absl::StatusOr<std::string> DescribeDevice();
absl::StatusOr<std::string> DescribeDevice(int index);
// Makes device `index` current for the calling thread (the CUDA runtime's current device is per
// thread). INVALID_ARGUMENT when there is no such device.
absl::Status UseDevice(int index);
// The calling thread's current device (0 when none was chosen).
int CurrentDevice();
// Bytes of device `index` in use (by every process) and its total memory (cudaMemGetInfo).
absl::Status DeviceMemoryInUse(int index, uint64_t* used_bytes, uint64_t* total_bytes);
// Waits for all work on the current device; maps a failure to INTERNAL.
absl::Status Synchronize();

// An owning cudaMalloc allocation of `bytes`.
class DeviceBuffer {
 public:
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }

  // Reallocates to at least `bytes` (and 256) when smaller; the contents are not kept.
  absl::Status GrowTo(size_t bytes);

  // Both host->device copies return when the bytes are in device memory, so work on any stream
  // (non-blocking ones included) may read them.
  absl::Status CopyFromHost(const void* host, size_t bytes);
  // Synchronous copy of `bytes` from host memory to any device address.
  static absl::Status CopyHostToDevice(void* device, const void* host, size_t bytes);
  absl::Status CopyToHost(void* host, size_t bytes) const;

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace expertmesh::cuda
