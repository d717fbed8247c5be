// BPE vocabulary/merges parsing and the per-word merge loop (a min-heap over (rank, position),
// mirroring HF tokenizers' Word::merge_all, stale entries skipped).
#include "engine/tokenizer/bpe_model.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/utf8.h"

namespace expertmesh {

using tokenizer_json::FieldError;
using tokenizer_json::FindMember;
using tokenizer_json::Json;

namespace {

// HF's BPE cache limits: at most this many words, each shorter than kCacheMaxWordBytes.
constexpr size_t kCacheCapacity = 10000;
constexpr size_t kCacheMaxWordBytes = 256;

// Splits a merges entry (either "left right" or ["left", "right"]) into its two tokens.
absl::Status ParseMerge(const Json& entry, const std::string& path, std::string* left, std::string* right) {
  if (entry.is_string()) {
    const std::string& line = entry.get_ref<const std::string&>();
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      return FieldError(path, absl::StrCat("'", line, "' is not two tokens separated by one space"));
    }
    *left = line.substr(0, space);
    *right = line.substr(space + 1);
    return absl::OkStatus();
  }
  if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
    *left = entry[0].get<std::string>();
    *right = entry[1].get<std::string>();
    return absl::OkStatus();
  }
  return FieldError(path, "must be \"left right\" or [\"left\", \"right\"]");
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& config, bool byte_level_input) {
  if (!config.is_object()) return FieldError("model", "is missing or not an object");
  if (const Json* type = FindMember(config, "type"); type != nullptr) {
    if (!type->is_string()) return FieldError("model.type", "must be a string");
    if (type->get_ref<const std::string&>() != "BPE") {
      return FieldError("model.type", absl::StrCat("unsupported model '", type->get_ref<const std::string&>(),
                                                   "' (only BPE is supported)"));
    }
  }
  auto model = std::unique_ptr<BpeModel>(new BpeModel());

  // Settings we do not implement are rejected rather than silently ignored.
  absl::StatusOr<bool> byte_fallback = tokenizer_json::OptionalBool(config, "byte_fallback", false, "model");
  if (!byte_fallback.ok()) return byte_fallback.status();
  if (*byte_fallback) return FieldError("model.byte_fallback", "true is not supported");
  if (const Json* dropout = FindMember(config, "dropout"); dropout != nullptr) {
    if (!dropout->is_number()) return FieldError("model.dropout", "must be a number or null");
    const double p = dropout->get<double>();
    if (!(p >= 0.0 && p <= 1.0)) return FieldError("model.dropout", "must be in [0, 1]");
    if (p > 0.0) return FieldError("model.dropout", "BPE dropout (non-deterministic encoding) is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const Json* affix = FindMember(config, key);
    if (affix == nullptr) continue;
    if (!affix->is_string()) return FieldError(tokenizer_json::Child("model", key), "must be a string or null");
    if (!affix->get_ref<const std::string&>().empty()) {
      return FieldError(tokenizer_json::Child("model", key), "is not supported by this byte-level BPE");
    }
  }
  absl::StatusOr<bool> fuse_unk = tokenizer_json::OptionalBool(config, "fuse_unk", false, "model");
  if (!fuse_unk.ok()) return fuse_unk.status();
  model->fuse_unk_ = *fuse_unk;
  absl::StatusOr<bool> ignore_merges = tokenizer_json::OptionalBool(config, "ignore_merges", false, "model");
  if (!ignore_merges.ok()) return ignore_merges.status();
  model->ignore_merges_ = *ignore_merges;

  // Vocabulary.
  const Json* vocab = FindMember(config, "vocab");
  if (vocab == nullptr || !vocab->is_object()) return FieldError("model.vocab", "must be an object {token: id}");
  int64_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX) {
      return FieldError(absl::StrCat("model.vocab[\"", it.key(), "\"]"), "must be a non-negative 32-bit integer id");
    }
    max_id = std::max(max_id, it.value().get<int64_t>());
  }
  // Ids index a dense table, so refuse absurdly sparse id spaces instead of allocating for them.
  if (max_id >= static_cast<int64_t>(16 * (vocab->size() + 1024))) {
    return FieldError("model.vocab", absl::StrCat("ids are too sparse (largest id ", max_id, " for ",
                                                  vocab->size(), " tokens)"));
  }
  model->id_to_token_.resize(max_id + 1);
  model->id_present_.assign(max_id + 1, false);
  model->vocab_.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const auto id = static_cast<int32_t>(it.value().get<int64_t>());
    if (model->id_present_[id]) {
      return FieldError("model.vocab", absl::StrCat("id ", id, " is used by both '", model->id_to_token_[id],
                                                    "' and '", it.key(), "'"));
    }
    model->id_present_[id] = true;
    model->id_to_token_[id] = it.key();
    model->vocab_.emplace(it.key(), id);
  }

  if (const Json* unk = FindMember(config, "unk_token"); unk != nullptr) {
    if (!unk->is_string()) return FieldError("model.unk_token", "must be a string or null");
    std::optional<int32_t> unk_id = model->TokenToId(unk->get_ref<const std::string&>());
    if (!unk_id) return FieldError("model.unk_token", absl::StrCat("'", unk->get<std::string>(), "' is not in the vocabulary"));
    model->unk_id_ = unk_id;
  }

  // Merges: rank = position in the list ("#version" lines are skipped, as HF does); a repeated
  // pair keeps its last rank.
  const Json* merges = FindMember(config, "merges");
  static const Json* const kNoMerges = new Json(Json::array());
  if (merges == nullptr) merges = kNoMerges;  // HF accepts a BPE without merges
  if (!merges->is_array()) return FieldError("model.merges", "must be a list");
  model->merges_.reserve(merges->size());
  int32_t rank = 0;
  std::string left, right;
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& entry = (*merges)[i];
    if (entry.is_string() && entry.get_ref<const std::string&>().starts_with("#version")) continue;
    const std::string path = tokenizer_json::Element("model.merges", i);
    absl::Status parsed = ParseMerge(entry, path, &left, &right);
    if (!parsed.ok()) return parsed;
    const std::string merged = left + right;
    const std::optional<int32_t> left_id = model->TokenToId(left);
    const std::optional<int32_t> right_id = model->TokenToId(right);
    const std::optional<int32_t> merged_id = model->TokenToId(merged);
    const std::string* missing = !left_id ? &left : !right_id ? &right : !merged_id ? &merged : nullptr;
    if (missing != nullptr) {
      return FieldError(path, absl::StrCat("merge token '", *missing, "' is not in the vocabulary"));
    }
    model->merges_[PairKey(*left_id, *right_id)] = Merge{rank++, *merged_id};
  }
  model->byte_level_input_ = byte_level_input;
  for (int byte = 0; byte < 256; ++byte) {
    const char raw = static_cast<char>(byte);
    std::string character;
    AppendByteLevelEncoded(std::string_view(&raw, 1), &character);
    model->byte_ids_[byte] = model->TokenToId(character).value_or(-1);
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(tokenizer_json::AsAbsl(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= id_limit() || !id_present_[id]) return nullptr;
  return &id_to_token_[id];
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

std::vector<int32_t> BpeModel::MergeWord(std::string_view word) const {
  struct Symbol {
    int32_t id;
    int32_t previous;  // index of the previous live symbol, -1 at the start
    int32_t next;      // index of the next live symbol, -1 at the end
    bool live;
  };
  // Scratch space reused across words on this thread (most words are short; allocation would dominate).
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  auto add = [&](int32_t id) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, true});
  };
  // Characters -> vocabulary ids; unknown characters -> unk (fused when fuse_unk), else dropped.
  bool pending_unk = false;
  size_t position = 0;
  while (position < word.size()) {
    std::optional<int32_t> id;
    if (byte_level_input_) {
      const int32_t byte_id = byte_ids_[static_cast<unsigned char>(word[position++])];
      if (byte_id >= 0) id = byte_id;
    } else {
      size_t length = 0;
      DecodeCodePoint(word, position, &length);
      id = TokenToId(word.substr(position, length));
      position += length;
    }
    if (id) {
      if (pending_unk) add(*unk_id_);
      pending_unk = false;
      add(*id);
    } else if (unk_id_) {
      if (pending_unk && !fuse_unk_) add(*unk_id_);
      pending_unk = true;
    }
  }
  if (pending_unk) add(*unk_id_);

  // Merge loop: always apply the lowest-rank merge, leftmost first on equal ranks.
  struct Candidate {
    int32_t rank;
    int32_t position;
    int32_t new_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  thread_local std::vector<Candidate> heap;  // min-heap on (rank, position)
  heap.clear();
  auto push = [](const Candidate& candidate) {
    heap.push_back(candidate);
    std::push_heap(heap.begin(), heap.end(), std::greater<Candidate>());
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* merge = FindMerge(symbols[i].id, symbols[i + 1].id)) {
      push({merge->rank, static_cast<int32_t>(i), merge->new_id});
    }
  }
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Candidate>());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& current = symbols[top.position];
    if (!current.live || current.next < 0) continue;
    const int32_t right_index = current.next;
    const Merge* merge = FindMerge(current.id, symbols[right_index].id);
    if (merge == nullptr || merge->new_id != top.new_id) continue;  // stale entry
    current.id = top.new_id;
    current.next = symbols[right_index].next;
    symbols[right_index].live = false;
    if (current.next >= 0) symbols[current.next].previous = top.position;
    if (current.previous >= 0) {
      if (const Merge* left = FindMerge(symbols[current.previous].id, current.id)) {
        push({left->rank, current.previous, left->new_id});
      }
    }
    if (current.next >= 0) {
      if (const Merge* right = FindMerge(current.id, symbols[current.next].id)) {
        push({right->rank, top.position, right->new_id});
      }
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(symbols.size());
  for (const Symbol& symbol : symbols) {
    if (symbol.live) ids.push_back(symbol.id);
  }
  return ids;
}

void BpeModel::Tokenize(std::span<const std::string_view> words, std::vector<int32_t>* ids) const {
  // Words computed in this call, inserted into the shared cache at the end under one lock.
  absl::flat_hash_map<std::string, std::vector<int32_t>> computed;
  {
    absl::ReaderMutexLock lock(&cache_mutex_);
    for (std::string_view word : words) {
      if (word.empty()) continue;
      if (ignore_merges_) {
        std::string token;
        if (byte_level_input_) AppendByteLevelEncoded(word, &token);
        if (std::optional<int32_t> id = TokenToId(byte_level_input_ ? std::string_view(token) : word)) {
          ids->push_back(*id);
          continue;
        }
      }
      const auto key = tokenizer_json::AsAbsl(word);
      auto cached = cache_.find(key);
      if (cached == cache_.end()) {
        cached = computed.find(key);
        if (cached == computed.end()) {
          std::vector<int32_t> merged = MergeWord(word);
          ids->insert(ids->end(), merged.begin(), merged.end());
          if (word.size() < kCacheMaxWordBytes) computed.emplace(key, std::move(merged));
          continue;
        }
      }
      ids->insert(ids->end(), cached->second.begin(), cached->second.end());
    }
  }
  if (computed.empty()) return;
  absl::MutexLock lock(&cache_mutex_);
  for (auto& [word, merged] : computed) {
    if (cache_.size() >= kCacheCapacity) break;
    cache_.emplace(word, std::move(merged));
  }
}

}  // namespace expertmesh
