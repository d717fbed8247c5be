// LatentKvCache: append / commit / rollback of per-layer latent and rotated-key rows.
#include "engine/model/latent_kv_cache.h"

#include <cassert>

#include "absl/strings/str_cat.h"

namespace expertmesh {

LatentKvCache::LatentKvCache(int64_t num_layers, int64_t kv_lora_rank, int64_t rope_dim)
    : kv_lora_rank_(kv_lora_rank), rope_dim_(rope_dim), layers_(num_layers) {}

void LatentKvCache::Append(int64_t layer, std::span<const float> latent,
                           std::span<const float> rope_key, int64_t count) {
  assert(static_cast<int64_t>(latent.size()) == count * kv_lora_rank_);
  assert(static_cast<int64_t>(rope_key.size()) == count * rope_dim_);
  Layer& l = layers_[layer];
  l.latent.insert(l.latent.end(), latent.begin(), latent.end());
  l.rope_key.insert(l.rope_key.end(), rope_key.begin(), rope_key.end());
}

int64_t LatentKvCache::LayerLength(int64_t layer) const {
  return static_cast<int64_t>(layers_[layer].latent.size()) / kv_lora_rank_;
}

absl::Status LatentKvCache::Commit(int64_t count) {
  for (int64_t layer = 0; layer < num_layers(); ++layer) {
    if (LayerLength(layer) != length_ + count) {
      return absl::InternalError(absl::StrCat("KV cache layer ", layer, " holds ", LayerLength(layer),
                                              " tokens, expected ", length_ + count));
    }
  }
  length_ += count;
  return absl::OkStatus();
}

void LatentKvCache::Rollback() { Truncate(length_); }

void LatentKvCache::Truncate(int64_t length) {
  assert(length >= 0 && length <= length_);
  for (Layer& l : layers_) {
    l.latent.resize(std::min<size_t>(l.latent.size(), length * kv_lora_rank_));
    l.rope_key.resize(std::min<size_t>(l.rope_key.size(), length * rope_dim_));
  }
  length_ = length;
}

uint64_t LatentKvCache::ByteSize() const {
  uint64_t bytes = 0;
  for (const Layer& l : layers_) bytes += (l.latent.size() + l.rope_key.size()) * sizeof(float);
  return bytes;
}

}  // namespace expertmesh
