// UTF-8 helpers for the tokenizer: strict validation (what a Rust &str accepts), lossy decoding
// that replaces each maximal invalid subsequence with U+FFFD exactly like Rust's
// String::from_utf8_lossy / Python's errors='replace', and the Unicode White_Space test.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace expertmesh {

// True when `bytes` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool IsValidUtf8(std::string_view bytes);

// Appends `bytes` to `out`, replacing every maximal invalid subsequence with U+FFFD. When
// `hold_incomplete_tail` is true, a trailing sequence that is a valid but unfinished character
// (more bytes could complete it) is left undecoded. Returns the number of bytes consumed.
size_t AppendUtf8Lossy(std::string_view bytes, bool hold_incomplete_tail, std::string* out);

// Decodes the code point starting at bytes[position] of valid UTF-8; sets *length to its byte count.
char32_t DecodeCodePoint(std::string_view bytes, size_t position, size_t* length);

// Unicode White_Space property (Rust's char::is_whitespace).
bool IsUnicodeWhitespace(char32_t code_point);

// Appends the UTF-8 encoding of `code_point` (must be a valid scalar value).
void AppendCodePoint(char32_t code_point, std::string* out);

}  // namespace expertmesh
