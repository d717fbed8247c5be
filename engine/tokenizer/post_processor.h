// PostProcessor: adds special tokens around an encoded single sequence, per tokenizer.json's
// "post_processor": TemplateProcessing (its "single" template), BertProcessing and
// RobertaProcessing, ByteLevel (offsets only: no change to ids), or a Sequence of these.
// Owns the resolved template; knows the BOS/EOS ids the template implies.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace expertmesh {

class PostProcessor {
 public:
  // `config` is the "post_processor" value (null: none). `id_exists` says whether an id is a
  // vocabulary or added token; special tokens naming other ids are INVALID_ARGUMENT.
  static absl::StatusOr<PostProcessor> FromJson(const nlohmann::json& config,
                                                const std::function<bool(int32_t)>& id_exists);

  // The final ids of one encoded sequence; with add_special_tokens false, `ids` unchanged.
  std::vector<int32_t> Process(std::vector<int32_t> ids, bool add_special_tokens) const;

  // The single special token the template puts before / after the sequence, if any.
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }

 private:
  struct Piece {
    bool is_sequence = false;
    std::vector<int32_t> ids;  // special token ids when !is_sequence
  };
  absl::Status AddProcessor(const nlohmann::json& config, const std::string& path,
                            const std::function<bool(int32_t)>& id_exists);
  void SetTemplate(std::vector<Piece> pieces);

  bool has_template_ = false;
  std::vector<Piece> single_;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
};

}  // namespace expertmesh
