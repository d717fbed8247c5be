// Conversions between checkpoint dtypes and float32: exact decodes, rounding, special values.
#include "engine/core/dtype.h"

#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

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

// Every 8- and 16-bit code, and f32 codes around the exponent's edge, placed among finite values
// at every position of a 64-byte block (the check reads whole blocks): found exactly where
// decoding the value and asking std::isfinite says so.
template <typename Bits>
void ExpectFoundWhereNotFinite(DType dtype, Bits code, bool finite, Bits one) {
  std::vector<Bits> values(70, one);
  const size_t at = code % 64;
  values[at] = code;
  const std::optional<size_t> found =
      FirstNonFiniteStored(dtype, reinterpret_cast<const std::byte*>(values.data()), values.size());
  if (finite) {
    EXPECT_FALSE(found.has_value()) << DTypeName(dtype) << " code " << uint32_t(code);
  } else {
    EXPECT_EQ(found, at) << DTypeName(dtype) << " code " << uint32_t(code);
  }
}

TEST(DTypeTest, FirstNonFiniteStoredAgreesWithTheDecodedValueForEveryCode) {
  for (uint32_t code = 0; code < 256; ++code) {
    const auto bits = static_cast<uint8_t>(code);
    ExpectFoundWhereNotFinite<uint8_t>(DType::kF8E4M3, bits, std::isfinite(Float8E4M3ToFloat(bits)), 0x38);
  }
  for (uint32_t code = 0; code < 65536; ++code) {
    const auto bits = static_cast<uint16_t>(code);
    ExpectFoundWhereNotFinite<uint16_t>(DType::kBF16, bits, std::isfinite(BFloat16ToFloat(bits)), 0x3f80);
    ExpectFoundWhereNotFinite<uint16_t>(DType::kF16, bits, std::isfinite(Float16ToFloat(bits)), 0x3c00);
  }
  for (uint32_t bits : {0x00000000u, 0x7f7fffffu, 0xff7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                        0x3f800000u, 0x00000001u, 0x807fffffu}) {
    float value;
    std::memcpy(&value, &bits, 4);
    ExpectFoundWhereNotFinite<uint32_t>(DType::kF32, bits, std::isfinite(value), 0x3f800000u);
  }
}

// Long tensors are checked in 64-byte blocks: the first bad element is found past block boundaries
// and in the tail after the last whole block, and a clean tensor of any length passes.
TEST(DTypeTest, FirstNonFiniteStoredFindsTheFirstBadElementOfALongTensor) {
  std::vector<uint8_t> fp8(10007, 0x38);  // 1.0
  const auto* bytes = reinterpret_cast<const std::byte*>(fp8.data());
  EXPECT_FALSE(FirstNonFiniteStored(DType::kF8E4M3, bytes, fp8.size()).has_value());
  fp8[10006] = 0xff;
  EXPECT_EQ(FirstNonFiniteStored(DType::kF8E4M3, bytes, fp8.size()), 10006u);
  EXPECT_FALSE(FirstNonFiniteStored(DType::kF8E4M3, bytes, 10006).has_value());  // stops at count
  fp8[4096] = 0x7f;
  EXPECT_EQ(FirstNonFiniteStored(DType::kF8E4M3, bytes, fp8.size()), 4096u);
  std::vector<float> f32(9000, 1.0f);
  f32[8191] = INFINITY;
  f32[8500] = NAN;
  EXPECT_EQ(FirstNonFiniteStored(DType::kF32, reinterpret_cast<const std::byte*>(f32.data()), f32.size()), 8191u);
  std::vector<uint16_t> bf16(5000, 0x3f80);
  bf16[4999] = 0xff80;  // -inf
  EXPECT_EQ(FirstNonFiniteStored(DType::kBF16, reinterpret_cast<const std::byte*>(bf16.data()), bf16.size()), 4999u);
}

}  // namespace
}  // namespace expertmesh
