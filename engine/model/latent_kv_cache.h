// LatentKvCache: the compressed MLA cache of one sequence. Per layer and token it keeps the
// normalized KV latent (kv_lora_rank floats, after kv_a_layernorm) and the rotated shared key part
// (qk_rope_head_dim floats) — nothing per head. The model appends one chunk per step to every
// layer and then commits it; a failed step rolls back to the committed length.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace expertmesh {

class LatentKvCache {
 public:
  LatentKvCache(int64_t num_layers, int64_t kv_lora_rank, int64_t rope_dim);

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  int64_t kv_lora_rank() const { return kv_lora_rank_; }
  int64_t rope_dim() const { return rope_dim_; }
  // Tokens committed (= position of the next token).
  int64_t length() const { return length_; }

  // Appends `count` tokens to `layer` (latent [count, kv_lora_rank], rope_key [count, rope_dim]).
  void Append(int64_t layer, std::span<const float> latent, std::span<const float> rope_key, int64_t count);
  // Tokens stored for `layer` (committed + appended in the current step).
  int64_t LayerLength(int64_t layer) const;
  // [LayerLength, kv_lora_rank] and [LayerLength, rope_dim] views.
  std::span<const float> Latents(int64_t layer) const { return layers_[layer].latent; }
  std::span<const float> RopeKeys(int64_t layer) const { return layers_[layer].rope_key; }

  // Every layer must hold length() + count tokens; makes them committed.
  absl::Status Commit(int64_t count);
  // Drops uncommitted tokens from every layer (after a failed step).
  void Rollback();
  // Keeps the first `length` tokens (<= length()).
  void Truncate(int64_t length);
  void Clear() { Truncate(0); }
  uint64_t ByteSize() const;

 private:
  struct Layer {
    std::vector<float> latent;
    std::vector<float> rope_key;
  };
  int64_t kv_lora_rank_;
  int64_t rope_dim_;
  int64_t length_ = 0;
  std::vector<Layer> layers_;
};

}  // namespace expertmesh
