// Scalar conversions between the checkpoint dtypes and float32.
#include "engine/core/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>

namespace expertmesh {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kF8E4M3: return 1;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF8E4M3: return "F8_E4M3";
  }
  return "?";
}

std::optional<DType> ParseDTypeName(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  if (name == "F8_E4M3") return DType::kF8E4M3;
  return std::nullopt;
}

float BFloat16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t FloatToBFloat16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float Float16ToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const int exponent = (bits >> 10) & 0x1f;
  const uint32_t mantissa = bits & 0x3ff;
  if (exponent == 0) {
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) {
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | (static_cast<uint32_t>(exponent + 112) << 23) | (mantissa << 13));
}

uint16_t FloatToFloat16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  if (std::isnan(value)) return sign | 0x7e00;
  const float magnitude = std::fabs(value);
  if (magnitude >= 65520.0f) return sign | 0x7c00;
  if (magnitude < std::ldexp(1.0f, -14)) {  // subnormal: multiples of 2^-24, ties to even
    return sign | static_cast<uint16_t>(std::nearbyint(magnitude * std::ldexp(1.0f, 24)));
  }
  uint32_t magnitude_bits = bits & 0x7fffffff;
  const uint32_t rounding = 0xfff + ((magnitude_bits >> 13) & 1);
  magnitude_bits += rounding;
  return sign | static_cast<uint16_t>(((magnitude_bits >> 23) - 112) << 10 | ((magnitude_bits >> 13) & 0x3ff));
}

float Float8E4M3ToFloat(uint8_t bits) {
  const bool negative = bits & 0x80;
  const int exponent = (bits >> 3) & 0xf;
  const int mantissa = bits & 0x7;
  float magnitude;
  if (exponent == 0xf && mantissa == 0x7) return std::nanf("");
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -9);  // subnormal: m/8 * 2^-6
  } else {
    magnitude = std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
  }
  return negative ? -magnitude : magnitude;
}

uint8_t FloatToFloat8E4M3(float value) {
  if (std::isnan(value)) return 0x7f;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  float magnitude = std::fabs(value);
  if (magnitude >= 448.0f) return sign | 0x7e;  // saturate to the largest finite value
  // Pick the nearest representable value (ties to even mantissa) by scanning the 127 codes.
  uint8_t best = 0;
  float best_error = magnitude;
  for (uint8_t code = 1; code <= 0x7e; ++code) {
    const float error = std::fabs(Float8E4M3ToFloat(code) - magnitude);
    if (error < best_error || (error == best_error && (code & 1) == 0)) {
      best = code;
      best_error = error;
    }
  }
  return sign | best;
}

void ConvertToFloat(DType dtype, const std::byte* bytes, size_t count, float* out) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out, bytes, count * 4);
      return;
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, bytes + 2 * i, 2);
        out[i] = BFloat16ToFloat(bits);
      }
      return;
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, bytes + 2 * i, 2);
        out[i] = Float16ToFloat(bits);
      }
      return;
    case DType::kF8E4M3: {
      static const auto* table = [] {
        auto* values = new float[256];
        for (int code = 0; code < 256; ++code) values[code] = Float8E4M3ToFloat(static_cast<uint8_t>(code));
        return values;
      }();
      for (size_t i = 0; i < count; ++i) out[i] = table[static_cast<uint8_t>(bytes[i])];
      return;
    }
  }
}

namespace {

// An element is non-finite when every bit of `mask` is set (the exponent field all ones; E4M3 has
// no infinities and its NaN is S.1111.111). With `low` the mask's lowest bit, (e & mask) + low
// reaches the element's sign bit exactly then and never carries past it, so 64-bit words test
// 8/4/2 elements at once; only a 64-byte block holding a bad element is scanned element by element.
template <typename Bits>
std::optional<size_t> FirstWithMaskSet(const std::byte* bytes, size_t count, Bits mask) {
  constexpr size_t kLanes = sizeof(uint64_t) / sizeof(Bits), kWords = 8, kBlock = kLanes * kWords;
  auto replicate = [](Bits lane) {
    uint64_t word = 0;
    for (size_t i = 0; i < kLanes; ++i) word |= static_cast<uint64_t>(lane) << (8 * sizeof(Bits) * i);
    return word;
  };
  const uint64_t masks = replicate(mask), lows = replicate(mask & static_cast<Bits>(~mask + 1)),
                 signs = replicate(static_cast<Bits>(Bits(1) << (8 * sizeof(Bits) - 1)));
  auto bad_element = [&](Bits value) { return (value & mask) == mask; };
  size_t first = 0;
  for (; first + kBlock <= count; first += kBlock) {
    uint64_t words[kWords];
    std::memcpy(words, bytes + first * sizeof(Bits), sizeof(words));
    uint64_t any = 0;
    for (uint64_t word : words) any |= ((word & masks) + lows) & signs;
    if (any != 0) break;
  }
  for (size_t i = first; i < count; ++i) {
    Bits value;
    std::memcpy(&value, bytes + i * sizeof(Bits), sizeof(Bits));
    if (bad_element(value)) return i;
  }
  return std::nullopt;
}

}  // namespace

std::optional<size_t> FirstNonFiniteStored(DType dtype, const std::byte* bytes, size_t count) {
  switch (dtype) {
    case DType::kF32: return FirstWithMaskSet<uint32_t>(bytes, count, 0x7f800000u);
    case DType::kBF16: return FirstWithMaskSet<uint16_t>(bytes, count, 0x7f80u);
    case DType::kF16: return FirstWithMaskSet<uint16_t>(bytes, count, 0x7c00u);
    case DType::kF8E4M3: return FirstWithMaskSet<uint8_t>(bytes, count, 0x7fu);
  }
  return std::nullopt;
}

}  // namespace expertmesh
