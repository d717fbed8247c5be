// Pre-tokenizer steps parsed from tokenizer.json and applied piece by piece, following HF
// tokenizers' NormalizedString::split semantics.
#include "engine/tokenizer/pre_tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/json_fields.h"

namespace expertmesh {

using tokenizer_json::Child;
using tokenizer_json::Element;
using tokenizer_json::FieldError;
using tokenizer_json::FindMember;
using tokenizer_json::Json;

absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name, std::string_view field_path) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return FieldError(field_path, absl::StrCat("unknown split behavior '", tokenizer_json::AsAbsl(name),
                                             "' (expected Removed, Isolated, MergedWithPrevious, "
                                             "MergedWithNext or Contiguous)"));
}

std::vector<std::pair<size_t, size_t>> SplitRanges(size_t text_size,
                                                   const std::vector<std::pair<size_t, size_t>>& matches,
                                                   SplitBehavior behavior, bool invert) {
  // 1. The whole text as alternating (range, is_match) parts, like HF's Pattern::find_matches.
  struct Part {
    size_t start, end;
    bool is_match;
  };
  std::vector<Part> parts;
  if (text_size == 0) {
    parts.push_back({0, 0, false});
  } else {
    size_t previous = 0;
    for (const auto& [start, end] : matches) {
      if (previous != start) parts.push_back({previous, start, false});
      parts.push_back({start, end, true});
      previous = end;
    }
    if (previous != text_size) parts.push_back({previous, text_size, false});
  }
  if (invert) {
    for (Part& part : parts) part.is_match = !part.is_match;
  }
  // 2. Apply the delimiter behaviour; `remove` marks pieces that are dropped.
  struct Piece {
    size_t start, end;
    bool remove;
  };
  std::vector<Piece> pieces;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& part : parts) pieces.push_back({part.start, part.end, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Part& part : parts) pieces.push_back({part.start, part.end, part.is_match});
      break;
    case SplitBehavior::kContiguous:
      for (const Part& part : parts) {
        if (part.is_match == previous_match && !pieces.empty()) {
          pieces.back().end = part.end;
        } else {
          pieces.push_back({part.start, part.end, false});
        }
        previous_match = part.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Part& part : parts) {
        if (part.is_match && !previous_match && !pieces.empty()) {
          pieces.back().end = part.end;
        } else {
          pieces.push_back({part.start, part.end, false});
        }
        previous_match = part.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      // Walk backwards, gluing each match onto the piece after it, then restore the order.
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !pieces.empty()) {
          pieces.back().start = it->start;
        } else {
          pieces.push_back({it->start, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
  }
  std::vector<std::pair<size_t, size_t>> ranges;
  ranges.reserve(pieces.size());
  for (const Piece& piece : pieces) {
    if (!piece.remove && piece.end > piece.start) ranges.emplace_back(piece.start, piece.end);
  }
  return ranges;
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const Json& config) {
  PreTokenizer pre_tokenizer;
  if (!config.is_null()) {
    absl::Status status = AddSteps(config, "pre_tokenizer", &pre_tokenizer.steps_);
    if (!status.ok()) return status;
  }
  return pre_tokenizer;
}

absl::Status PreTokenizer::AddSteps(const Json& config, const std::string& path, std::vector<Step>* steps) {
  absl::StatusOr<std::string> type = tokenizer_json::TypeOf(config, path);
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    const Json* list = FindMember(config, "pretokenizers");
    const std::string list_path = Child(path, "pretokenizers");
    if (list == nullptr || !list->is_array()) return FieldError(list_path, "must be a list of pre-tokenizers");
    for (size_t i = 0; i < list->size(); ++i) {
      absl::Status status = AddSteps((*list)[i], Element(list_path, i), steps);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }
  Step step;
  if (*type == "Split") {
    const Json* pattern = FindMember(config, "pattern");
    const std::string pattern_path = Child(path, "pattern");
    if (pattern == nullptr || !pattern->is_object() || pattern->size() != 1) {
      return FieldError(pattern_path, "must be {\"Regex\": ...} or {\"String\": ...}");
    }
    const bool literal = FindMember(*pattern, "String") != nullptr;
    const Json* source = FindMember(*pattern, literal ? "String" : "Regex");
    if (source == nullptr || !source->is_string()) {
      return FieldError(pattern_path, "must be {\"Regex\": \"...\"} or {\"String\": \"...\"}");
    }
    absl::StatusOr<RegexPattern> regex = RegexPattern::Compile(
        source->get_ref<const std::string&>(), literal, Child(pattern_path, literal ? "String" : "Regex"));
    if (!regex.ok()) return regex.status();
    step.pattern.emplace(std::move(regex).value());
    absl::StatusOr<std::string> behavior_name = tokenizer_json::RequiredString(config, "behavior", path);
    if (!behavior_name.ok()) return behavior_name.status();
    absl::StatusOr<SplitBehavior> behavior = ParseSplitBehavior(*behavior_name, Child(path, "behavior"));
    if (!behavior.ok()) return behavior.status();
    step.behavior = *behavior;
    absl::StatusOr<bool> invert = tokenizer_json::OptionalBool(config, "invert", false, path);
    if (!invert.ok()) return invert.status();
    step.invert = *invert;
  } else if (*type == "ByteLevel") {
    step.kind = Step::Kind::kByteLevel;
    // HF's ByteLevel::default() has add_prefix_space = true and use_regex = true.
    absl::StatusOr<bool> add_prefix_space = tokenizer_json::OptionalBool(config, "add_prefix_space", true, path);
    if (!add_prefix_space.ok()) return add_prefix_space.status();
    step.add_prefix_space = *add_prefix_space;
    absl::StatusOr<bool> use_regex = tokenizer_json::OptionalBool(config, "use_regex", true, path);
    if (!use_regex.ok()) return use_regex.status();
    absl::StatusOr<bool> trim_offsets = tokenizer_json::OptionalBool(config, "trim_offsets", true, path);
    if (!trim_offsets.ok()) return trim_offsets.status();  // offsets only; no effect on ids
    if (*use_regex) {
      absl::StatusOr<RegexPattern> regex = RegexPattern::Compile(kGpt2SplitPattern, false, path);
      if (!regex.ok()) return regex.status();
      step.pattern.emplace(std::move(regex).value());
    }
  } else if (*type == "Digits") {
    // HF splits on char::is_numeric (categories Nd, Nl, No), each digit its own match.
    absl::StatusOr<bool> individual = tokenizer_json::OptionalBool(config, "individual_digits", false, path);
    if (!individual.ok()) return individual.status();
    absl::StatusOr<RegexPattern> regex = RegexPattern::Compile("\\p{N}", false, path);
    if (!regex.ok()) return regex.status();
    step.pattern.emplace(std::move(regex).value());
    step.behavior = *individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else {
    return FieldError(Child(path, "type"), absl::StrCat("unsupported pre-tokenizer '", *type,
                                                        "' (supported: Sequence, Split, ByteLevel, Digits)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status PreTokenizer::SplitWords(const Step& step, PreTokenizedText& text) {
  if (!step.pattern) return absl::OkStatus();
  std::vector<std::pair<size_t, size_t>> next;
  next.reserve(text.words.size() * 2);
  std::vector<std::pair<size_t, size_t>> matches;
  const std::string_view buffer = text.buffer;
  for (const auto& [word_start, word_end] : text.words) {
    const std::string_view word = buffer.substr(word_start, word_end - word_start);
    matches.clear();
    absl::Status status = step.pattern->FindMatches(word, &matches);
    if (!status.ok()) return status;
    if (step.behavior == SplitBehavior::kIsolated && !step.invert) {
      // Fast path for the common case: matches and the gaps between them, all kept.
      size_t previous = 0;
      for (const auto& [start, end] : matches) {
        if (previous < start) next.emplace_back(word_start + previous, word_start + start);
        if (start < end) next.emplace_back(word_start + start, word_start + end);
        previous = end;
      }
      if (previous < word.size()) next.emplace_back(word_start + previous, word_end);
      continue;
    }
    for (const auto& [start, end] : SplitRanges(word.size(), matches, step.behavior, step.invert)) {
      next.emplace_back(word_start + start, word_start + end);
    }
  }
  text.words = std::move(next);
  return absl::OkStatus();
}

absl::Status PreTokenizer::ApplyByteLevel(const Step& step, bool last_step, PreTokenizedText& text) {
  if (step.add_prefix_space) {
    // HF prepends a space to every word that does not start with one.
    std::string buffer;
    buffer.reserve(text.buffer.size() + text.words.size());
    for (auto& [start, end] : text.words) {
      const size_t new_start = buffer.size();
      if (text.buffer[start] != ' ') buffer.push_back(' ');
      buffer.append(text.buffer, start, end - start);
      start = new_start;
      end = buffer.size();
    }
    text.buffer = std::move(buffer);
  }
  absl::Status status = SplitWords(step, text);
  if (!status.ok()) return status;
  if (last_step) return absl::OkStatus();  // the model maps raw bytes itself
  std::string mapped;
  mapped.reserve(text.buffer.size() * 2);
  for (auto& [start, end] : text.words) {
    const size_t new_start = mapped.size();
    AppendByteLevelEncoded(std::string_view(text.buffer).substr(start, end - start), &mapped);
    start = new_start;
    end = mapped.size();
  }
  text.buffer = std::move(mapped);
  return absl::OkStatus();
}

absl::Status PreTokenizer::Apply(std::string_view text, PreTokenizedText* out) const {
  out->buffer.assign(text.data(), text.size());
  out->words.clear();
  if (!text.empty()) out->words.emplace_back(0, text.size());
  for (size_t i = 0; i < steps_.size(); ++i) {
    const Step& step = steps_[i];
    absl::Status status = step.kind == Step::Kind::kByteLevel ? ApplyByteLevel(step, i + 1 == steps_.size(), *out)
                                                              : SplitWords(step, *out);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

bool PreTokenizer::ends_with_byte_level() const {
  return !steps_.empty() && steps_.back().kind == Step::Kind::kByteLevel;
}

}  // namespace expertmesh
