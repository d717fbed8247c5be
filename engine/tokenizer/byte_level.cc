// The GPT-2 bytes_to_unicode table and its inverse, built once.
#include "engine/tokenizer/byte_level.h"

#include <array>

#include "engine/tokenizer/utf8.h"

namespace expertmesh {
namespace {

struct Alphabet {
  std::array<char32_t, 256> byte_to_char;
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, 0x144> char_to_byte;  // -1 outside the alphabet
  Alphabet() {
    char_to_byte.fill(-1);
    char32_t next_extra = 256;
    for (int byte = 0; byte < 256; ++byte) {
      const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
                             (byte >= 0xAE && byte <= 0xFF);
      byte_to_char[byte] = printable ? static_cast<char32_t>(byte) : next_extra++;
      AppendCodePoint(byte_to_char[byte], &byte_to_utf8[byte]);
      char_to_byte[byte_to_char[byte]] = static_cast<int16_t>(byte);
    }
  }
};

const Alphabet& GetAlphabet() {
  static const Alphabet* alphabet = new Alphabet();
  return *alphabet;
}

}  // namespace

void AppendByteLevelEncoded(std::string_view bytes, std::string* out) {
  const Alphabet& alphabet = GetAlphabet();
  for (char byte : bytes) out->append(alphabet.byte_to_utf8[static_cast<unsigned char>(byte)]);
}

std::optional<uint8_t> ByteLevelCharToByte(char32_t character) {
  // The alphabet is the 188 printable Latin-1 characters plus U+0100..U+0143 for the other 68.
  if (character >= 0x144) return std::nullopt;
  const int16_t byte = GetAlphabet().char_to_byte[character];
  if (byte < 0) return std::nullopt;
  return static_cast<uint8_t>(byte);
}

std::string ByteLevelDecodeToken(std::string_view token) {
  std::string bytes;
  size_t position = 0;
  while (position < token.size()) {
    size_t length = 0;
    const char32_t character = DecodeCodePoint(token, position, &length);
    const std::optional<uint8_t> byte = ByteLevelCharToByte(character);
    if (!byte) return std::string(token);
    bytes.push_back(static_cast<char>(*byte));
    position += length;
  }
  return bytes;
}

}  // namespace expertmesh
