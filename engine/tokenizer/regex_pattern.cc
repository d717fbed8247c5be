// PCRE2 compile/match wrapper with Oniguruma-compatible match iteration.
#include "engine/tokenizer/regex_pattern.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace expertmesh {

struct RegexPattern::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

namespace {

std::string ErrorText(int error_code) {
  PCRE2_UCHAR buffer[256];
  const int length = pcre2_get_error_message(error_code, buffer, sizeof(buffer));
  if (length < 0) return absl::StrCat("PCRE2 error ", error_code);
  return std::string(reinterpret_cast<const char*>(buffer), length);
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

// One match-data block per thread, reused by every pattern: only the whole-match offsets are
// read, so one ovector pair suffices (PCRE2 then returns 0 for patterns with groups).
pcre2_match_data* ThreadMatchData() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(pcre2_match_data_create(1, nullptr));
  return data.get();
}

}  // namespace

RegexPattern::RegexPattern(std::unique_ptr<Code> code, std::string source)
    : code_(std::move(code)), source_(std::move(source)) {}
RegexPattern::RegexPattern(RegexPattern&&) noexcept = default;
RegexPattern& RegexPattern::operator=(RegexPattern&&) noexcept = default;
RegexPattern::~RegexPattern() = default;

absl::StatusOr<RegexPattern> RegexPattern::Compile(std::string_view pattern, bool literal,
                                                   std::string_view field_path) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // UCP makes \s, \w, \d Unicode-aware like Oniguruma's; PCRE2 refuses it with LITERAL.
  const uint32_t options = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP;
  auto code = std::make_unique<Code>();
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                             &error_code, &error_offset, nullptr);
  if (code->code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", absl::string_view(field_path.data(), field_path.size()), ": bad regex at offset ",
                                                   error_offset, ": ", ErrorText(error_code)));
  }
  code->jit = pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE) == 0;
  return RegexPattern(std::move(code), std::string(pattern));
}

absl::Status RegexPattern::FindMatches(std::string_view text,
                                       std::vector<std::pair<size_t, size_t>>* matches) const {
  pcre2_match_data* data = ThreadMatchData();
  if (data == nullptr) return absl::ResourceExhaustedError("out of memory for regex match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t search_from = 0;
  bool have_previous = false;
  size_t previous_end = 0;
  while (search_from <= text.size()) {
    // The text was validated once up front, so skip PCRE2's per-call UTF check (which would make
    // the iteration quadratic).
    int rc = code_->jit ? pcre2_jit_match(code_->code, subject, text.size(), search_from, 0, data, nullptr)
                        : pcre2_match(code_->code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK, data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // deep backtracking: the interpreter keeps its frames on the heap
      rc = pcre2_match(code_->code, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data,
                       nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat("regex '", source_, "' failed on a ", text.size(), "-byte piece: ", ErrorText(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const size_t start = ovector[0];
    const size_t end = ovector[1];
    if (start == end && have_previous && previous_end == end) {
      // Oniguruma/onig crate rule: no empty match right after the previous one; step one character.
      size_t step = 1;
      if (search_from < text.size()) {
        const auto lead = static_cast<unsigned char>(text[search_from]);
        step = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
      }
      search_from += step;
      continue;
    }
    matches->emplace_back(start, end);
    have_previous = true;
    previous_end = end;
    search_from = end;
  }
  return absl::OkStatus();
}

}  // namespace expertmesh
