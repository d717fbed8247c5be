// BpeModel: the "model" of a tokenizer.json of type BPE — vocabulary (token <-> id), merges as a
// rank map over id pairs, and HF's merge loop (lowest rank first, leftmost on ties). Owns a
// bounded, mutex-guarded cache of per-word results (one lock per call, not per word), so
// Tokenize is thread-safe and repeated words cost one hash lookup. Supports ignore_merges,
// unk_token/fuse_unk; rejects byte_fallback, dropout > 0, continuing_subword_prefix and
// end_of_word_suffix.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json_fwd.hpp"

namespace expertmesh {

class BpeModel {
 public:
  // `config` is the "model" object of tokenizer.json. INVALID_ARGUMENT naming the field for a
  // wrong type, bad vocabulary ids, malformed merges or merges of tokens missing from the vocab.
  // With `byte_level_input`, words are raw bytes read through the ByteLevel alphabet (byte b is
  // the vocabulary token of its alphabet character); otherwise words are UTF-8 characters.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& config, bool byte_level_input);

  // Appends the ids of each word (pre-tokenized pieces), in order. Characters (or bytes) missing
  // from the vocabulary become unk_token when set, else are dropped (as HF does).
  void Tokenize(std::span<const std::string_view> words, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // nullptr when no vocabulary token has this id.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest vocabulary id.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }
  size_t vocab_size() const { return vocab_.size(); }
  size_t merge_count() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  const Merge* FindMerge(int32_t left, int32_t right) const;
  // Splits `word` into vocabulary symbols and applies the merges.
  std::vector<int32_t> MergeWord(std::string_view word) const;

  // Vocabulary id of each byte's ByteLevel character (-1: not in the vocabulary), when byte_level_input_.
  bool byte_level_input_ = false;
  std::array<int32_t, 256> byte_ids_{};
  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_present_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  mutable absl::Mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mutex_);
};

}  // namespace expertmesh
