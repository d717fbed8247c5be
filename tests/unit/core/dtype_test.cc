// Conversions between checkpoint dtypes and float32: exact decodes, rounding, special values.
#include "engine/core/dtype.h"

#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

namespace expertmesh {
namespace {

TEST(DTypeTest, NamesRoundTrip) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}) {
    EXPECT_EQ(ParseDTypeName(DTypeName(dtype)), dtype);
  }
  EXPECT_FALSE(ParseDTypeName("I64").has_value());
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1u);
}

TEST(DTypeTest, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f)), 1.0f);
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(-2.5f)), -2.5f);
}

TEST(DTypeTest, Float16DecodesNormalsSubnormalsAndInfinity) {
  EXPECT_EQ(Float16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(Float16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(Float16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(Float16ToFloat(0x7c00)));
  for (float value : {0.5f, -3.25f, 65504.0f, 6.1035156e-05f, 1e-6f}) {
    const float decoded = Float16ToFloat(FloatToFloat16(value));
    EXPECT_NEAR(decoded, value, std::fabs(value) * 1e-3f + 6e-8f) << value;
  }
}

TEST(DTypeTest, Float8E4M3MatchesTheOcpFormat) {
  EXPECT_EQ(Float8E4M3ToFloat(0x38), 1.0f);       // exponent 7, mantissa 0
  EXPECT_EQ(Float8E4M3ToFloat(0x7e), 448.0f);     // largest finite
  EXPECT_EQ(Float8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_TRUE(std::isnan(Float8E4M3ToFloat(0x7f)));
  EXPECT_EQ(Float8E4M3ToFloat(0xb8), -1.0f);
  EXPECT_EQ(FloatToFloat8E4M3(1000.0f), 0x7e);    // saturates
  for (int code = 0; code < 0x7f; ++code) {       // every finite code round-trips
    EXPECT_EQ(FloatToFloat8E4M3(Float8E4M3ToFloat(static_cast<uint8_t>(code))), code) << code;
  }
}

TEST(DTypeTest, ConvertToFloatHandlesEveryDType) {
  const uint16_t bf16[2] = {0x3f80, 0xc040};
  float out[2];
  ConvertToFloat(DType::kBF16, reinterpret_cast<const std::byte*>(bf16), 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  const uint8_t f8[2] = {0x38, 0x40};
  ConvertToFloat(DType::kF8E4M3, reinterpret_cast<const std::byte*>(f8), 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 2.0f);
}

}  // namespace
}  // namespace expertmesh
