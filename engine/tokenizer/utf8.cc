// UTF-8 validation, lossy decoding (maximal-subpart replacement) and White_Space classification.
#include "engine/tokenizer/utf8.h"

namespace expertmesh {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// Bytes a sequence starting with `lead` should have; 0 for bytes that never start one.
int SequenceWidth(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

bool IsContinuation(unsigned char byte) { return (byte & 0xC0) == 0x80; }

// Whether `second` may follow `lead` (the lead-specific ranges exclude overlongs, surrogates and
// code points above U+10FFFF).
bool IsValidSecondByte(unsigned char lead, unsigned char second) {
  switch (lead) {
    case 0xE0: return second >= 0xA0 && second <= 0xBF;
    case 0xED: return second >= 0x80 && second <= 0x9F;
    case 0xF0: return second >= 0x90 && second <= 0xBF;
    case 0xF4: return second >= 0x80 && second <= 0x8F;
    default: return IsContinuation(second);
  }
}

// Length of the well-formed prefix of the sequence at `position` (1..width); equals the width
// when the character is complete. `truncated` tells whether it stopped at the end of the input.
int ValidPrefixLength(std::string_view bytes, size_t position, int width, bool* truncated) {
  const auto lead = static_cast<unsigned char>(bytes[position]);
  *truncated = false;
  for (int k = 1; k < width; ++k) {
    if (position + k >= bytes.size()) {
      *truncated = true;
      return k;
    }
    const auto byte = static_cast<unsigned char>(bytes[position + k]);
    const bool ok = k == 1 ? IsValidSecondByte(lead, byte) : IsContinuation(byte);
    if (!ok) return k;
  }
  return width;
}

}  // namespace

bool IsValidUtf8(std::string_view bytes) {
  size_t position = 0;
  while (position < bytes.size()) {
    const auto lead = static_cast<unsigned char>(bytes[position]);
    if (lead < 0x80) {
      ++position;
      continue;
    }
    const int width = SequenceWidth(lead);
    bool truncated = false;
    if (width == 0 || ValidPrefixLength(bytes, position, width, &truncated) != width) return false;
    position += width;
  }
  return true;
}

size_t AppendUtf8Lossy(std::string_view bytes, bool hold_incomplete_tail, std::string* out) {
  size_t position = 0;
  size_t clean_start = 0;  // start of the run of valid bytes not yet appended
  while (position < bytes.size()) {
    const auto lead = static_cast<unsigned char>(bytes[position]);
    if (lead < 0x80) {
      ++position;
      continue;
    }
    const int width = SequenceWidth(lead);
    bool truncated = false;
    const int valid = width == 0 ? 1 : ValidPrefixLength(bytes, position, width, &truncated);
    if (width != 0 && valid == width) {
      position += width;
      continue;
    }
    out->append(bytes.substr(clean_start, position - clean_start));
    if (truncated && hold_incomplete_tail) return position;
    out->append(kReplacementCharacter);
    position += valid;
    clean_start = position;
  }
  out->append(bytes.substr(clean_start));
  return bytes.size();
}

char32_t DecodeCodePoint(std::string_view bytes, size_t position, size_t* length) {
  const auto lead = static_cast<unsigned char>(bytes[position]);
  int width = SequenceWidth(lead);
  if (width == 0 || position + width > bytes.size()) width = 1;  // not reached for valid input
  *length = width;
  if (width == 1) return lead;
  char32_t code_point = lead & (0xFF >> (width + 1));
  for (int k = 1; k < width; ++k) {
    code_point = (code_point << 6) | (static_cast<unsigned char>(bytes[position + k]) & 0x3F);
  }
  return code_point;
}

bool IsUnicodeWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

void AppendCodePoint(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

}  // namespace expertmesh
