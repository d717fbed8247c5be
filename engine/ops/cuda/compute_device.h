// ComputeDevice: the services' --device flag ("cpu", "cuda" = "cuda:0", "cuda:N"), parsed by a
// header that needs no CUDA, so a binary built without it (-DEXPERTMESH_CUDA=OFF) can refuse a
// GPU request with a clear message. kBuiltWithCuda says which build the including target is.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace expertmesh {

#if defined(EXPERTMESH_HAS_CUDA)
inline constexpr bool kBuiltWithCuda = true;
#else
inline constexpr bool kBuiltWithCuda = false;
#endif

struct ComputeDevice {
  bool is_cuda = false;
  int index = 0;  // CUDA device ordinal
  std::string ToString() const { return is_cuda ? absl::StrCat("cuda:", index) : "cpu"; }
};

inline absl::StatusOr<ComputeDevice> ParseComputeDevice(absl::string_view text) {
  ComputeDevice device;
  if (text == "cpu") return device;
  device.is_cuda = true;
  if (text == "cuda") return device;
  const absl::string_view kPrefix = "cuda:";
  int index = -1;
  if (text.substr(0, kPrefix.size()) != kPrefix || !absl::SimpleAtoi(text.substr(kPrefix.size()), &index) ||
      index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu, cuda or cuda:N (N >= 0), got \"", text, "\""));
  }
  device.index = index;
  return device;
}

// The error a binary built without CUDA gives for a GPU device.
inline absl::Status CudaNotBuiltError(const ComputeDevice& device) {
  return absl::FailedPreconditionError(absl::StrCat(
      "--device=", device.ToString(), " needs a build with CUDA (cmake -DEXPERTMESH_CUDA=ON); this binary was built "
      "without it: use --device=cpu"));
}

}  // namespace expertmesh
