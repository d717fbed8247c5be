// Element types found in DeepSeek checkpoints and the scalar conversions between them and float32.
// Conversions are exact where the format allows (bf16/f16/f8 -> f32) and round-to-nearest-even
// the other way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace expertmesh {

enum class DType { kF32, kBF16, kF16, kF8E4M3 };

// Bytes per element.
size_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "BF16", "F16", "F8_E4M3".
std::string_view DTypeName(DType dtype);
// Inverse of DTypeName; nullopt for types the engine does not read.
std::optional<DType> ParseDTypeName(std::string_view name);

float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);  // round to nearest even; NaN stays NaN
float Float16ToFloat(uint16_t bits);
uint16_t FloatToFloat16(float value);   // round to nearest even
float Float8E4M3ToFloat(uint8_t bits);  // OCP E4M3 "fn": no infinities, 0x7f/0xff are NaN
uint8_t FloatToFloat8E4M3(float value); // round to nearest even, saturates at +-448

// Converts `count` elements of `dtype` stored little-endian at `bytes` into `out` (float32).
void ConvertToFloat(DType dtype, const std::byte* bytes, size_t count, float* out);

// Index of the first NaN or infinity among `count` elements of `dtype` at `bytes`, read from the
// stored bits (no conversion; for loaders that upload raw bytes), or nullopt when all are finite.
std::optional<size_t> FirstNonFiniteStored(DType dtype, const std::byte* bytes, size_t count);

}  // namespace expertmesh
