// Host-side CUDA runtime calls (compiled by the C++ compiler against the CUDA runtime).
#include "engine/ops/cuda/cuda_device.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/status_macros.h"

namespace expertmesh::cuda {
namespace {

absl::Status FromCuda(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

}  // namespace

absl::Status CheckDeviceAvailable() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("no GPU: ", cudaGetErrorString(error)));
  }
  if (count == 0) return absl::UnavailableError("no GPU: no CUDA device present");
  return absl::OkStatus();
}

absl::StatusOr<int> DeviceCount() {
  if (absl::Status status = CheckDeviceAvailable(); !status.ok()) return status;
  int count = 0;
  if (absl::Status status = FromCuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount"); !status.ok()) return status;
  return count;
}

absl::StatusOr<std::string> DescribeDevice() { return DescribeDevice(0); }

absl::StatusOr<std::string> DescribeDevice(int index) {
  if (absl::Status status = CheckDeviceAvailable(); !status.ok()) return status;
  cudaDeviceProp properties;
  if (absl::Status status = FromCuda(cudaGetDeviceProperties(&properties, index), "cudaGetDeviceProperties");
      !status.ok()) {
    return status;
  }
  return absl::StrFormat("%s, sm_%d%d, %.1f GiB", properties.name, properties.major, properties.minor,
                         properties.totalGlobalMem / double(1 << 30));
}

absl::Status UseDevice(int index) {
  if (absl::Status status = CheckDeviceAvailable(); !status.ok()) return status;
  int count = 0;
  if (absl::Status status = FromCuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount"); !status.ok()) return status;
  if (index < 0 || index >= count) {
    return absl::InvalidArgumentError(absl::StrCat("no CUDA device ", index, " (this machine has ", count, ")"));
  }
  return FromCuda(cudaSetDevice(index), "cudaSetDevice");
}

int CurrentDevice() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  return device;
}

absl::Status DeviceMemoryInUse(int index, uint64_t* used_bytes, uint64_t* total_bytes) {
  if (absl::Status status = UseDevice(index); !status.ok()) return status;
  size_t free_bytes = 0, total = 0;
  if (absl::Status status = FromCuda(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo"); !status.ok()) {
    return status;
  }
  *used_bytes = total - free_bytes;
  *total_bytes = total;
  return absl::OkStatus();
}

absl::Status Synchronize() { return FromCuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  const cudaError_t error = cudaMalloc(&buffer.data_, bytes);
  if (error != cudaSuccess) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorString(error)));
  }
  buffer.bytes_ = bytes;
  return buffer;
}

absl::Status DeviceBuffer::GrowTo(size_t bytes) {
  if (bytes_ >= bytes) return absl::OkStatus();
  *this = DeviceBuffer();  // the old memory goes first
  EXPERTMESH_ASSIGN_OR_RETURN(*this, Allocate(std::max<size_t>(bytes, 256)));
  return absl::OkStatus();
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_) cudaFree(data_);
}

absl::Status DeviceBuffer::CopyFromHost(const void* host, size_t bytes) {
  if (bytes > bytes_) return absl::InvalidArgumentError("CopyFromHost: more bytes than the buffer holds");
  return CopyHostToDevice(data_, host, bytes);
}

absl::Status DeviceBuffer::CopyHostToDevice(void* device, const void* host, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  EXPERTMESH_RETURN_IF_ERROR(FromCuda(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy host->device"));
  // cudaMemcpy from pageable memory returns once the bytes are staged, before the DMA lands; work
  // on the services' non-blocking streams is not ordered after it. Wait, so the bytes are there.
  return FromCuda(cudaStreamSynchronize(cudaStreamLegacy), "cudaMemcpy host->device (completion)");
}

absl::Status DeviceBuffer::CopyToHost(void* host, size_t bytes) const {
  if (bytes > bytes_) return absl::InvalidArgumentError("CopyToHost: more bytes than the buffer holds");
  return FromCuda(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy device->host");
}

}  // namespace expertmesh::cuda
