// Wire codec for activations: round trips, size mismatches and non-finite values are rejected.
#include "engine/rpc/tensor_payload.h"

#include <cmath>

#include <gtest/gtest.h>

namespace expertmesh::rpc {
namespace {

TEST(TensorPayloadTest, F32RoundTripsExactly) {
  const std::vector<float> values = {1.5f, -2.25f, 3e-8f, 65504.0f};
  std::string bytes;
  ASSERT_TRUE(EncodeTensor(values, v1::TENSOR_DTYPE_F32, &bytes).ok());
  EXPECT_EQ(bytes.size(), 16u);
  std::vector<float> decoded;
  ASSERT_TRUE(DecodeTensor(bytes, v1::TENSOR_DTYPE_F32, 4, "x", &decoded).ok());
  EXPECT_EQ(decoded, values);
}

TEST(TensorPayloadTest, BFloat16HalvesTheBytesAndRounds) {
  const std::vector<float> values = {1.0f, 1.00390625f, -3.0f};
  std::string bytes;
  ASSERT_TRUE(EncodeTensor(values, v1::TENSOR_DTYPE_BF16, &bytes).ok());
  EXPECT_EQ(bytes.size(), 6u);
  std::vector<float> decoded;
  ASSERT_TRUE(DecodeTensor(bytes, v1::TENSOR_DTYPE_BF16, 3, "x", &decoded).ok());
  EXPECT_EQ(decoded[0], 1.0f);
  EXPECT_EQ(decoded[1], 1.0f);  // 1 + 2^-8 ties to even
  EXPECT_EQ(decoded[2], -3.0f);
}

TEST(TensorPayloadTest, RejectsWrongSizeUnknownDTypeAndNonFinite) {
  std::string bytes(12, '\0');
  std::vector<float> decoded;
  absl::Status status = DecodeTensor(bytes, v1::TENSOR_DTYPE_F32, 4, "activations", &decoded);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("activations: expected 4 values (16 bytes), got 12 bytes"), std::string::npos)
      << status;
  status = DecodeTensor(bytes, v1::TENSOR_DTYPE_UNSPECIFIED, 3, "activations", &decoded);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  const std::vector<float> with_nan = {1.0f, std::nanf(""), 2.0f};
  ASSERT_TRUE(EncodeTensor(with_nan, v1::TENSOR_DTYPE_F32, &bytes).ok());
  status = DecodeTensor(bytes, v1::TENSOR_DTYPE_F32, 3, "activations", &decoded);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("non-finite value at element 1"), std::string::npos) << status;
}

}  // namespace
}  // namespace expertmesh::rpc
