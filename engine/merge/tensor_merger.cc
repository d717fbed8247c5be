// TensorMerger: recipe-vs-checkpoint validation, output planning and the float32 merge of one
// tensor (relative distance, delta rule, lambda sum, conversion to the output dtype).
#include "engine/merge/tensor_merger.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/core/status_macros.h"
#include "engine/merge/tensor_glob.h"

namespace expertmesh {
namespace {

constexpr absl::string_view kScaleSuffix = "_scale_inv";

// First field (by config.json name) in which two configs differ in a way that changes the math;
// FP8 block quantization is a storage detail and may differ (it is dequantized before merging).
std::optional<std::string> FirstConfigDifference(const ModelConfig& a, const ModelConfig& b) {
#define EXPERTMESH_COMPARE(field) \
  if (!(a.field == b.field)) return std::string(#field);
  EXPERTMESH_COMPARE(model_type)
  EXPERTMESH_COMPARE(vocab_size)
  EXPERTMESH_COMPARE(hidden_size)
  EXPERTMESH_COMPARE(intermediate_size)
  EXPERTMESH_COMPARE(moe_intermediate_size)
  EXPERTMESH_COMPARE(num_hidden_layers)
  EXPERTMESH_COMPARE(num_attention_heads)
  EXPERTMESH_COMPARE(max_position_embeddings)
  EXPERTMESH_COMPARE(q_lora_rank)
  EXPERTMESH_COMPARE(kv_lora_rank)
  EXPERTMESH_COMPARE(qk_nope_head_dim)
  EXPERTMESH_COMPARE(qk_rope_head_dim)
  EXPERTMESH_COMPARE(v_head_dim)
  EXPERTMESH_COMPARE(attention_bias)
  EXPERTMESH_COMPARE(n_routed_experts)
  EXPERTMESH_COMPARE(n_shared_experts)
  EXPERTMESH_COMPARE(num_experts_per_tok)
  EXPERTMESH_COMPARE(first_k_dense_replace)
  EXPERTMESH_COMPARE(moe_layer_freq)
  EXPERTMESH_COMPARE(n_group)
  EXPERTMESH_COMPARE(topk_group)
  EXPERTMESH_COMPARE(topk_method)
  EXPERTMESH_COMPARE(scoring_func)
  EXPERTMESH_COMPARE(norm_topk_prob)
  EXPERTMESH_COMPARE(routed_scaling_factor)
  EXPERTMESH_COMPARE(rope_theta)
  EXPERTMESH_COMPARE(rope_interleave)
  EXPERTMESH_COMPARE(rms_norm_eps)
  EXPERTMESH_COMPARE(tie_word_embeddings)
#undef EXPERTMESH_COMPARE
  if (a.yarn.has_value() != b.yarn.has_value()) return std::string("rope_scaling");
  if (a.yarn) {
    const YarnScaling& x = *a.yarn;
    const YarnScaling& y = *b.yarn;
    if (x.factor != y.factor || x.original_max_position_embeddings != y.original_max_position_embeddings ||
        x.beta_fast != y.beta_fast || x.beta_slow != y.beta_slow || x.mscale != y.mscale ||
        x.mscale_all_dim != y.mscale_all_dim) {
      return std::string("rope_scaling");
    }
  }
  return std::nullopt;
}

std::string ParentLabel(const Recipe& recipe, int index) {
  return absl::StrCat("parent '", recipe.parents[index].name, "' (", recipe.parents[index].checkpoint.string(), ")");
}

std::vector<std::byte> Encode(DType dtype, std::span<const float> values) {
  std::vector<std::byte> bytes(values.size() * DTypeSize(dtype));
  if (dtype == DType::kF32) {
    std::memcpy(bytes.data(), values.data(), bytes.size());
  } else {  // kBF16 (the only other dtype a selected tensor is planned with)
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t bits = FloatToBFloat16(values[i]);
      bytes[2 * i] = static_cast<std::byte>(bits & 0xff);
      bytes[2 * i + 1] = static_cast<std::byte>(bits >> 8);
    }
  }
  return bytes;
}

}  // namespace

std::string_view TensorOriginName(TensorOrigin origin) {
  switch (origin) {
    case TensorOrigin::kMerged: return "merged";
    case TensorOrigin::kKeptByDelta: return "kept_by_delta";
    case TensorOrigin::kCopiedFromBase: return "copied";
  }
  return "?";
}

absl::StatusOr<Tensor> MergedTensor::ToFloat() const {
  if (dtype == DType::kF8E4M3) {
    return absl::FailedPreconditionError(
        absl::StrCat("tensor ", name, " is an FP8 copy; dequantize it through the base Checkpoint"));
  }
  const int64_t count = ShapeElementCount(shape);
  if (static_cast<uint64_t>(count) * DTypeSize(dtype) != bytes.size()) {
    return absl::InternalError(absl::StrCat("tensor ", name, ": byte size does not match its shape"));
  }
  std::vector<float> values(count);
  ConvertToFloat(dtype, bytes.data(), count, values.data());
  return Tensor(shape, std::move(values));
}

double RelativeDistance(std::span<const float> a, std::span<const float> base) {
  double difference = 0.0, norm = 0.0;
  const size_t count = std::min(a.size(), base.size());
  for (size_t i = 0; i < count; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(base[i]);
    difference += d * d;
    norm += static_cast<double>(base[i]) * static_cast<double>(base[i]);
  }
  if (difference == 0.0) return 0.0;
  if (norm == 0.0) return std::numeric_limits<double>::infinity();
  return std::sqrt(difference) / std::sqrt(norm);
}

absl::StatusOr<std::unique_ptr<TensorMerger>> TensorMerger::Create(const Recipe& recipe,
                                                                   std::vector<const Checkpoint*> parents,
                                                                   TensorMergerOptions options) {
  EXPERTMESH_RETURN_IF_ERROR(ValidateRecipe(recipe));
  if (parents.size() != recipe.parents.size()) {
    return absl::InvalidArgumentError(absl::StrCat("recipe '", recipe.name, "' has ", recipe.parents.size(),
                                                   " parents but ", parents.size(), " checkpoints were given"));
  }
  for (size_t i = 0; i < parents.size(); ++i) {
    if (parents[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("no checkpoint for ", ParentLabel(recipe, static_cast<int>(i))));
    }
  }
  std::unique_ptr<TensorMerger> merger(new TensorMerger());
  merger->recipe_ = recipe;
  merger->parents_ = std::move(parents);
  merger->base_ = recipe.BaseIndex();
  for (const RecipeParent& parent : recipe.parents) merger->lambdas_.push_back(static_cast<float>(parent.lambda));
  const int base_index = merger->base_;
  const Checkpoint& base = *merger->parents_[base_index];

  for (int i = 0; i < static_cast<int>(merger->parents_.size()); ++i) {
    if (i == base_index) continue;
    if (auto field = FirstConfigDifference(merger->parents_[i]->config(), base.config())) {
      return absl::InvalidArgumentError(absl::StrCat(ParentLabel(recipe, i), " has a different config than base ",
                                                     ParentLabel(recipe, base_index), ": field ", *field));
    }
  }

  const std::vector<std::string> names = base.TensorNames();
  std::set<std::string> selected;
  std::vector<int64_t> glob_hits(recipe.merge_globs.size(), 0);
  for (const std::string& name : names) {
    if (absl::EndsWith(name, kScaleSuffix)) continue;  // follows its weight, never merged itself
    for (size_t g = 0; g < recipe.merge_globs.size(); ++g) {
      if (GlobMatches(recipe.merge_globs[g], name)) {
        ++glob_hits[g];
        selected.insert(name);
      }
    }
  }
  if (options.require_every_glob_to_match) {
    for (size_t g = 0; g < recipe.merge_globs.size(); ++g) {
      if (glob_hits[g] == 0) {
        return absl::InvalidArgumentError(absl::StrCat("merge glob '", recipe.merge_globs[g],
                                                       "' matches no tensor of base ", ParentLabel(recipe, base_index),
                                                       " (", names.size(), " tensors)"));
      }
    }
  }

  for (const std::string& name : names) {
    const TensorLocation* location = base.Find(name);
    if (location == nullptr) return absl::InternalError(absl::StrCat("base lists ", name, " but cannot find it"));
    const bool is_selected = selected.count(name) > 0;
    if (absl::EndsWith(name, kScaleSuffix) && selected.count(name.substr(0, name.size() - kScaleSuffix.size()))) {
      continue;  // the merged weight is stored unquantized
    }
    OutputTensorSpec spec{name, location->dtype, location->shape, is_selected};
    if (is_selected) {
      spec.dtype = location->dtype == DType::kF32 ? DType::kF32 : recipe.output_dtype;
      for (int i = 0; i < static_cast<int>(merger->parents_.size()); ++i) {
        if (i == base_index) continue;
        const TensorLocation* other = merger->parents_[i]->Find(name);
        if (other == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat(ParentLabel(recipe, i), " has no tensor ", name, " (selected for merging)"));
        }
        if (other->shape != location->shape) {
          return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape ", FormatShape(other->shape), " in ",
                                                         ParentLabel(recipe, i), " but ", FormatShape(location->shape),
                                                         " in base ", ParentLabel(recipe, base_index)));
        }
      }
    }
    merger->outputs_.push_back(std::move(spec));
  }
  return merger;
}

const OutputTensorSpec* TensorMerger::FindOutput(const std::string& name) const {
  auto found = std::lower_bound(outputs_.begin(), outputs_.end(), name,
                                [](const OutputTensorSpec& spec, const std::string& key) { return spec.name < key; });
  return found != outputs_.end() && found->name == name ? &*found : nullptr;
}

absl::StatusOr<MergedTensor> TensorMerger::Merge(const std::string& name, std::stop_token stop) const {
  const OutputTensorSpec* spec = FindOutput(name);
  if (spec == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor ", name, " is not part of merge '", recipe_.name, "'"));
  }
  if (stop.stop_requested()) return absl::CancelledError(absl::StrCat("merge cancelled before ", name));
  MergedTensor result;
  result.name = name;
  result.dtype = spec->dtype;
  result.shape = spec->shape;
  const Checkpoint& base = *parents_[base_];
  if (!spec->selected) {
    EXPERTMESH_ASSIGN_OR_RETURN(std::span<const std::byte> raw, base.RawBytes(name));
    result.origin = TensorOrigin::kCopiedFromBase;
    result.relative_distance = std::numeric_limits<double>::quiet_NaN();
    result.bytes.assign(raw.begin(), raw.end());
    return result;
  }

  // LoadFloat dequantizes FP8 and rejects NaN/inf (DATA_LOSS naming file and tensor).
  EXPERTMESH_ASSIGN_OR_RETURN(Tensor base_values, base.LoadFloat(name, &spec->shape));
  const int64_t count = base_values.size();
  std::vector<float> merged(count);
  double distance = 0.0;
  for (int i = 0; i < static_cast<int>(parents_.size()); ++i) {
    if (stop.stop_requested()) return absl::CancelledError(absl::StrCat("merge cancelled in ", name));
    Tensor loaded;
    const Tensor* values = &base_values;
    if (i != base_) {
      EXPERTMESH_ASSIGN_OR_RETURN(loaded, parents_[i]->LoadFloat(name, &spec->shape));
      values = &loaded;
      distance = std::max(distance, RelativeDistance(loaded.values(), base_values.values()));
    }
    const float lambda = lambdas_[i];
    const float* w = values->data();
    if (i == 0) {
      for (int64_t j = 0; j < count; ++j) merged[j] = lambda * w[j];
    } else {
      for (int64_t j = 0; j < count; ++j) merged[j] = merged[j] + lambda * w[j];
    }
  }
  result.relative_distance = distance;
  if (distance < recipe_.delta) {
    result.origin = TensorOrigin::kKeptByDelta;
    result.bytes = Encode(spec->dtype, base_values.values());
  } else {
    result.origin = TensorOrigin::kMerged;
    for (int64_t j = 0; j < count; ++j) {
      if (!std::isfinite(merged[j])) {
        return absl::InvalidArgumentError(absl::StrCat("merge '", recipe_.name, "': tensor ", name,
                                                       " overflows float32 at element ", j, " (lambdas too large)"));
      }
    }
    result.bytes = Encode(spec->dtype, merged);
  }
  return result;
}

std::string MergeProgress::ToString() const {
  return absl::StrFormat("merging: %d/%d tensors (%.1f/%.1f MB): %d merged, %d kept by delta, %d copied",
                         tensors_done, tensors_total, static_cast<double>(bytes_done) / 1e6,
                         static_cast<double>(bytes_total) / 1e6, merged, kept_by_delta, copied);
}

absl::StatusOr<std::vector<MergedTensor>> MergeTensors(const TensorMerger& merger, std::span<const std::string> names,
                                                       const MergeProgressCallback& progress, std::stop_token stop) {
  MergeProgress state;
  state.tensors_total = static_cast<int64_t>(names.size());
  for (const std::string& name : names) {
    const OutputTensorSpec* spec = merger.FindOutput(name);
    if (spec == nullptr) {
      return absl::NotFoundError(absl::StrCat("tensor ", name, " is not part of merge '", merger.recipe().name, "'"));
    }
    state.bytes_total += static_cast<uint64_t>(ShapeElementCount(spec->shape)) * DTypeSize(spec->dtype);
  }
  std::vector<MergedTensor> merged;
  merged.reserve(names.size());
  if (progress) progress(state);
  for (const std::string& name : names) {
    EXPERTMESH_ASSIGN_OR_RETURN(MergedTensor tensor, merger.Merge(name, stop));
    ++state.tensors_done;
    state.bytes_done += tensor.bytes.size();
    switch (tensor.origin) {
      case TensorOrigin::kMerged: ++state.merged; break;
      case TensorOrigin::kKeptByDelta: ++state.kept_by_delta; break;
      case TensorOrigin::kCopiedFromBase: ++state.copied; break;
    }
    state.current = name;
    merged.push_back(std::move(tensor));
    if (progress) progress(state);
  }
  return merged;
}

}  // namespace expertmesh
