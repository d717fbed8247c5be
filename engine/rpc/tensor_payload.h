// Raw activation payloads on the wire: float32 rows encoded as little-endian f32 or bf16 bytes
// (protobuf `bytes`), decoded with size and finiteness checks so a bad message is a clear
// INVALID_ARGUMENT, never a crash or a silent NaN.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "expertmesh/v1/common.pb.h"

namespace expertmesh::rpc {

size_t BytesPerElement(v1::TensorDType dtype);  // 0 for unspecified/unknown

// Appends `values` encoded as `dtype` to `out` (replacing its contents).
absl::Status EncodeTensor(std::span<const float> values, v1::TensorDType dtype, std::string* out);

// Decodes `bytes` holding exactly `expected_count` values of `dtype` into `out` (resized).
// `what` names the field in error messages. Rejects NaN/Inf.
absl::Status DecodeTensor(const std::string& bytes, v1::TensorDType dtype, int64_t expected_count,
                          const char* what, std::vector<float>* out);

}  // namespace expertmesh::rpc
