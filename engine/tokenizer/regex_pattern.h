// RegexPattern: one compiled PCRE2 pattern (UTF + UCP, JIT when available) standing in for the
// Oniguruma regexes of HF tokenizers, with HF's match iteration (an empty match right where the
// previous match ended is skipped). Owns the compiled code; const methods are thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace expertmesh {

class RegexPattern {
 public:
  // Compiles `pattern` (a literal string when `literal`); INVALID_ARGUMENT naming `field_path`
  // and the offending offset for a bad pattern.
  static absl::StatusOr<RegexPattern> Compile(std::string_view pattern, bool literal,
                                              std::string_view field_path);

  RegexPattern(RegexPattern&&) noexcept;
  RegexPattern& operator=(RegexPattern&&) noexcept;
  ~RegexPattern();

  // Appends the [start, end) byte ranges of all matches in `text` (valid UTF-8) in order.
  // RESOURCE_EXHAUSTED if PCRE2 gives up (match or depth limit).
  absl::Status FindMatches(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

  const std::string& source() const { return source_; }

 private:
  struct Code;
  RegexPattern(std::unique_ptr<Code> code, std::string source);
  std::unique_ptr<Code> code_;
  std::string source_;
};

}  // namespace expertmesh
