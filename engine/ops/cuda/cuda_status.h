// Host-side error mapping for CUDA runtime and cuBLAS calls: every call's return code becomes an
// absl::Status naming the call. Host code only (includes the CUDA runtime header); kernels report
// through the launchers of the *_kernels.h headers.
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace expertmesh::cuda {

// OK for cudaSuccess, else INTERNAL ("<what>: <cuda error string>"); out-of-memory is
// RESOURCE_EXHAUSTED so callers can tell a full card from a broken one.
inline absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  if (error == cudaErrorMemoryAllocation) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
  }
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

// The launch error of the kernel just enqueued (invalid configuration, missing image, ...).
inline absl::Status LastLaunchStatus(const char* kernel) {
  return CudaStatus(cudaGetLastError(), kernel);
}

}  // namespace expertmesh::cuda
