// PreTokenizer: HF tokenizers' pre-tokenization pipeline, a sequence of steps that each split
// every current piece into smaller pieces. Supported steps: Split (Regex or String pattern, all
// five delimiter behaviours, invert), ByteLevel (add_prefix_space, GPT-2 regex when use_regex,
// then bytes -> byte-level alphabet) and Digits (individual_digits). Owns the compiled regexes.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/tokenizer/regex_pattern.h"
#include "nlohmann/json_fwd.hpp"

namespace expertmesh {

// What happens to the delimiter (the regex matches) when splitting, as in HF's
// SplitDelimiterBehavior.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Parses "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous".
absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name, std::string_view field_path);

// Given the matches of a pattern in a text of `text_size` bytes, the [start, end) ranges of the
// resulting pieces under `behavior` (inverted: the non-matching stretches act as delimiters).
// Empty pieces are dropped, as HF does.
std::vector<std::pair<size_t, size_t>> SplitRanges(size_t text_size,
                                                   const std::vector<std::pair<size_t, size_t>>& matches,
                                                   SplitBehavior behavior, bool invert);

// The words of one text: byte ranges into `buffer`, which holds the text as the steps left it
// (a ByteLevel step with add_prefix_space rewrites it).
struct PreTokenizedText {
  std::string buffer;
  std::vector<std::pair<size_t, size_t>> words;  // [start, end) in buffer
  std::string_view word(size_t index) const {
    return std::string_view(buffer).substr(words[index].first, words[index].second - words[index].first);
  }
};

class PreTokenizer {
 public:
  // `config` is the "pre_tokenizer" value of tokenizer.json (null: no pre-tokenization).
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& config);

  // Splits `text` (valid UTF-8, not an added token) into the words the model tokenizes.
  absl::Status Apply(std::string_view text, PreTokenizedText* out) const;

  // True when the last step is ByteLevel. Its words are then left as raw bytes and the model
  // reads them through the byte-level alphabet (BpeModel's byte-level input), which saves
  // re-encoding every word; otherwise words are already in the model's alphabet.
  bool ends_with_byte_level() const;

 private:
  struct Step {
    enum class Kind { kSplit, kByteLevel };
    Kind kind = Kind::kSplit;
    std::optional<RegexPattern> pattern;  // the split regex (GPT-2's for ByteLevel with use_regex)
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel
  };
  static absl::Status AddSteps(const nlohmann::json& config, const std::string& path, std::vector<Step>* steps);
  // Splits every word of `text` by the step's pattern.
  static absl::Status SplitWords(const Step& step, PreTokenizedText& text);
  // ByteLevel: prefix space, GPT-2 split, and (unless it is the last step) the byte-level alphabet.
  static absl::Status ApplyByteLevel(const Step& step, bool last_step, PreTokenizedText& text);

  std::vector<Step> steps_;
};

}  // namespace expertmesh
