// ByteLevel alphabet of GPT-2-style byte-level BPE: every byte 0..255 is shown as one printable
// Unicode character (printable Latin-1 bytes as themselves, the rest as U+0100 + n), so any text
// becomes a string over 256 symbols. Owns the two lookup tables; stateless otherwise.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace expertmesh {

// GPT-2's pre-tokenization regex, applied by ByteLevel when use_regex is true.
inline constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Appends the byte-level form of `bytes` (each byte as its alphabet character, UTF-8 encoded).
void AppendByteLevelEncoded(std::string_view bytes, std::string* out);

// The byte a byte-level alphabet character stands for; nullopt for characters outside it.
std::optional<uint8_t> ByteLevelCharToByte(char32_t character);

// The bytes a vocabulary token decodes to under HF's ByteLevel decoder: the alphabet bytes when
// every character of `token` is in the alphabet, otherwise the token's own UTF-8 bytes (this is
// how added tokens such as "<|end|>" decode to themselves).
std::string ByteLevelDecodeToken(std::string_view token);

}  // namespace expertmesh
