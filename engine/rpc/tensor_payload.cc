// f32/bf16 activation payload codec.
#include "engine/rpc/tensor_payload.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/core/dtype.h"

namespace expertmesh::rpc {

size_t BytesPerElement(v1::TensorDType dtype) {
  switch (dtype) {
    case v1::TENSOR_DTYPE_F32: return 4;
    case v1::TENSOR_DTYPE_BF16: return 2;
    default: return 0;
  }
}

absl::Status EncodeTensor(std::span<const float> values, v1::TensorDType dtype, std::string* out) {
  const size_t element_bytes = BytesPerElement(dtype);
  if (element_bytes == 0) return absl::InvalidArgumentError("unsupported tensor dtype");
  out->resize(values.size() * element_bytes);
  if (dtype == v1::TENSOR_DTYPE_F32) {
    std::memcpy(out->data(), values.data(), values.size() * 4);
  } else {
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t bits = FloatToBFloat16(values[i]);
      std::memcpy(out->data() + 2 * i, &bits, 2);
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeTensor(const std::string& bytes, v1::TensorDType dtype, int64_t expected_count,
                          const char* what, std::vector<float>* out) {
  const size_t element_bytes = BytesPerElement(dtype);
  if (element_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": dtype must be F32 or BF16, got ",
                                                   v1::TensorDType_Name(dtype)));
  }
  if (expected_count < 0 || bytes.size() != static_cast<size_t>(expected_count) * element_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected ", expected_count, " values (",
                                                   expected_count * element_bytes, " bytes), got ",
                                                   bytes.size(), " bytes"));
  }
  out->resize(expected_count);
  ConvertToFloat(dtype == v1::TENSOR_DTYPE_F32 ? DType::kF32 : DType::kBF16,
                 reinterpret_cast<const std::byte*>(bytes.data()), expected_count, out->data());
  for (int64_t i = 0; i < expected_count; ++i) {
    if (!std::isfinite((*out)[i])) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": non-finite value at element ", i));
    }
  }
  return absl::OkStatus();
}

}  // namespace expertmesh::rpc
