// expertmesh-inspect: the memory plan of a model without loading its weights. From a config.json
// (or a checkpoint directory, whose safetensors headers are then also checked against the plan)
// it prints parameters and bytes per service — attention-svc (everything but routed experts),
// each of N expert shards (contiguous expert ranges, as expert-svc splits them), router-svc
// (tokenizer only) — the activated parameters per token, the multi-token-prediction layers the
// engine does not serve, and the latent KV cache per token and at max_position_embeddings.
// The tensor lists come from NonExpertWeightSpecs / RoutedExpertWeightSpecs, i.e. what is loaded.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/cli/command_line.h"
#include "engine/core/status_macros.h"
#include "engine/format/checkpoint.h"
#include "engine/model/model_weights.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + safetensors headers)");
ABSL_FLAG(std::string, config, "", "a config.json (instead of --model)");
ABSL_FLAG(int64_t, expert_shards, 1, "number of expert-svc shards splitting the routed experts");
ABSL_FLAG(std::string, dtype, "", "serving dtype: bf16, fp8 (block-scaled e4m3, DeepSeek-V3 layout) or f32; "
                                  "default fp8 for FP8 checkpoints, else bf16");
ABSL_FLAG(bool, json, false, "print the plan as JSON");

namespace expertmesh {
namespace {

enum class ServingDtype { kF32, kBF16, kFP8 };

// Parameters and serving bytes of a set of tensors.
struct Tally {
  int64_t tensors = 0;
  int64_t parameters = 0;
  uint64_t bytes = 0;
  void Add(const Tally& other) {
    tensors += other.tensors;
    parameters += other.parameters;
    bytes += other.bytes;
  }
};

// DeepSeek-V3's FP8 checkpoints store every linear layer except the router, embeddings and LM
// head as block-scaled e4m3 (plus a float32 scale per block); the rest stays bf16.
bool StoredAsFp8(const WeightSpec& spec) {
  if (spec.shape.size() != 2 || absl::StrContains(spec.name, "embed_tokens") ||
      absl::StartsWith(spec.name, "lm_head") || absl::EndsWith(spec.name, "mlp.gate.weight")) {
    return false;
  }
  return absl::EndsWith(spec.name, "_proj.weight") || absl::EndsWith(spec.name, "_proj_with_mqa.weight");
}

Tally Count(const WeightSpec& spec, ServingDtype dtype, const ModelConfig& config) {
  Tally tally;
  tally.tensors = 1;
  tally.parameters = ShapeElementCount(spec.shape);
  const uint64_t elements = static_cast<uint64_t>(tally.parameters);
  if (dtype == ServingDtype::kF32 || absl::EndsWith(spec.name, "e_score_correction_bias")) {
    tally.bytes = elements * 4;  // the correction bias stays float32 in every checkpoint
  } else if (dtype == ServingDtype::kFP8 && StoredAsFp8(spec)) {
    const uint64_t row_blocks = (spec.shape[0] + config.fp8_block_rows - 1) / config.fp8_block_rows;
    const uint64_t col_blocks = (spec.shape[1] + config.fp8_block_cols - 1) / config.fp8_block_cols;
    tally.bytes = elements + row_blocks * col_blocks * 4;
  } else {
    tally.bytes = elements * 2;
  }
  return tally;
}

Tally CountAll(const std::vector<WeightSpec>& specs, ServingDtype dtype, const ModelConfig& config) {
  Tally tally;
  for (const WeightSpec& spec : specs) tally.Add(Count(spec, dtype, config));
  return tally;
}

struct ExpertShard {
  int64_t first_expert = 0;
  int64_t num_experts = 0;
  Tally tally;
};

struct MemoryPlan {
  ServingDtype dtype = ServingDtype::kBF16;
  int64_t moe_layers = 0;
  Tally attention;                  // attention-svc
  std::vector<ExpertShard> shards;  // expert-svc shards
  Tally routed;                     // all routed experts
  Tally one_expert_all_layers;      // one expert id across every MoE layer
  int64_t activated_parameters = 0;
  Tally mtp;                        // multi-token prediction layers (stored, not served)
  int64_t kv_values_per_token = 0;  // latent + rope key values over all layers
  uint64_t kv_element_bytes = 0;
};

// Tensors of DeepSeek-V3's multi-token-prediction module `index` as its checkpoints store them
// (layer num_hidden_layers + index): a full decoder layer, enorm, hnorm, eh_proj, and copies of the
// embedding and output head.
std::vector<WeightSpec> MtpSpecs(const ModelConfig& config, int64_t index) {
  ModelConfig extended = config;
  const int64_t layer = config.num_hidden_layers + index;
  extended.num_hidden_layers = layer + 1;
  const std::string prefix = absl::StrCat("model.layers.", layer, ".");
  std::vector<WeightSpec> specs;
  absl::StatusOr<std::vector<WeightSpec>> layer_specs = NonExpertWeightSpecs(extended);
  if (!layer_specs.ok()) return specs;  // the config was validated with the same rules already
  for (WeightSpec& spec : *layer_specs) {
    if (absl::StartsWith(spec.name, prefix)) specs.push_back(std::move(spec));
  }
  if (extended.IsMoeLayer(layer)) {
    for (int64_t expert = 0; expert < config.n_routed_experts; ++expert) {
      for (WeightSpec& spec : RoutedExpertWeightSpecs(config, layer, expert)) specs.push_back(std::move(spec));
    }
  }
  const int64_t hidden = config.hidden_size;
  specs.push_back({prefix + "enorm.weight", {hidden}});
  specs.push_back({prefix + "hnorm.weight", {hidden}});
  specs.push_back({prefix + "eh_proj.weight", {hidden, 2 * hidden}});
  specs.push_back({prefix + "shared_head.norm.weight", {hidden}});
  specs.push_back({prefix + "embed_tokens.weight", {config.vocab_size, hidden}});
  specs.push_back({prefix + "shared_head.head.weight", {config.vocab_size, hidden}});
  return specs;
}

absl::StatusOr<MemoryPlan> PlanMemory(const ModelConfig& config, ServingDtype dtype, int64_t num_shards) {
  MemoryPlan plan;
  plan.dtype = dtype;
  EXPERTMESH_ASSIGN_OR_RETURN(std::vector<WeightSpec> non_expert, NonExpertWeightSpecs(config));
  plan.attention = CountAll(non_expert, dtype, config);
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) plan.moe_layers += config.IsMoeLayer(layer);
  const int64_t experts = plan.moe_layers > 0 ? config.n_routed_experts : 0;
  if (num_shards < 1) return absl::InvalidArgumentError("--expert-shards must be >= 1");
  if (experts > 0 && num_shards > experts) {
    return absl::InvalidArgumentError(absl::StrCat("--expert-shards ", num_shards, " exceeds the ", experts,
                                                   " routed experts"));
  }
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (config.IsMoeLayer(layer)) plan.one_expert_all_layers.Add(CountAll(RoutedExpertWeightSpecs(config, layer, 0), dtype, config));
  }
  for (int64_t shard = 0; shard < num_shards; ++shard) {
    ExpertShard range;  // the contiguous split expert-svc uses: [s*E/N, (s+1)*E/N)
    range.first_expert = shard * experts / num_shards;
    range.num_experts = (shard + 1) * experts / num_shards - range.first_expert;
    for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
      if (!config.IsMoeLayer(layer)) continue;
      for (int64_t e = range.first_expert; e < range.first_expert + range.num_experts; ++e) {
        range.tally.Add(CountAll(RoutedExpertWeightSpecs(config, layer, e), dtype, config));
      }
    }
    plan.routed.Add(range.tally);
    plan.shards.push_back(range);
  }
  plan.activated_parameters =
      plan.attention.parameters + config.num_experts_per_tok * plan.one_expert_all_layers.parameters;
  for (int64_t index = 0; index < config.num_nextn_predict_layers; ++index) {
    plan.mtp.Add(CountAll(MtpSpecs(config, index), dtype, config));
  }
  plan.kv_values_per_token = config.num_hidden_layers * (config.kv_lora_rank + config.qk_rope_head_dim);
  // FP8 serving keeps activations and the cache in bf16, as DeepSeek-V3's inference code does.
  plan.kv_element_bytes = dtype == ServingDtype::kF32 ? 4 : 2;
  return plan;
}

// Stored bytes of a checkpoint's tensors, grouped like the plan, plus what the plan misses.
struct CheckpointSummary {
  uint64_t attention_bytes = 0, expert_bytes = 0, other_bytes = 0;
  int64_t tensors = 0;
  std::vector<std::string> missing;     // planned tensors absent from the checkpoint
  std::vector<std::string> mismatched;  // planned tensors with another shape
};

absl::StatusOr<CheckpointSummary> SummarizeCheckpoint(const Checkpoint& checkpoint) {
  const ModelConfig& config = checkpoint.config();
  EXPERTMESH_ASSIGN_OR_RETURN(std::vector<WeightSpec> planned, NonExpertWeightSpecs(config));
  const size_t non_expert_count = planned.size();
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    if (!config.IsMoeLayer(layer)) continue;
    for (int64_t e = 0; e < config.n_routed_experts; ++e) {
      for (WeightSpec& spec : RoutedExpertWeightSpecs(config, layer, e)) planned.push_back(std::move(spec));
    }
  }
  CheckpointSummary summary;
  std::set<std::string> counted;
  for (size_t i = 0; i < planned.size(); ++i) {
    uint64_t& group = i < non_expert_count ? summary.attention_bytes : summary.expert_bytes;
    const TensorLocation* location = checkpoint.Find(planned[i].name);
    if (location == nullptr) {
      summary.missing.push_back(planned[i].name);
      continue;
    }
    if (location->shape != planned[i].shape) {
      summary.mismatched.push_back(absl::StrCat(planned[i].name, " ", FormatShape(location->shape), " (config implies ",
                                                FormatShape(planned[i].shape), ")"));
    }
    group += location->byte_size;
    counted.insert(planned[i].name);
    if (const TensorLocation* scale = checkpoint.Find(planned[i].name + "_scale_inv")) {
      group += scale->byte_size;
      counted.insert(scale->name);
    }
  }
  for (const std::string& name : checkpoint.TensorNames()) {
    ++summary.tensors;
    if (!counted.contains(name)) summary.other_bytes += checkpoint.Find(name)->byte_size;
  }
  return summary;
}

std::string Grouped(int64_t value) {
  std::string digits = absl::StrCat(value < 0 ? -value : value), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

std::string Bytes(uint64_t bytes) {
  const double gib = static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0);
  if (gib >= 1.0) return absl::StrFormat("%.2f GiB", gib);
  return absl::StrFormat("%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

const char* DtypeName(ServingDtype dtype) {
  return dtype == ServingDtype::kF32 ? "f32" : dtype == ServingDtype::kBF16 ? "bf16" : "fp8";
}

nlohmann::json TallyJson(const Tally& tally) {
  return {{"tensors", tally.tensors}, {"parameters", tally.parameters}, {"bytes", tally.bytes}};
}

void PrintJson(const ModelConfig& config, const MemoryPlan& plan, const CheckpointSummary* checkpoint) {
  nlohmann::json out;
  out["model_type"] = config.model_type;
  out["dtype"] = DtypeName(plan.dtype);
  out["moe_layers"] = plan.moe_layers;
  out["parameters"] = {{"total", plan.attention.parameters + plan.routed.parameters},
                       {"non_expert", plan.attention.parameters},
                       {"routed_experts", plan.routed.parameters},
                       {"activated_per_token", plan.activated_parameters},
                       {"mtp_not_served", plan.mtp.parameters}};
  out["attention_svc"] = TallyJson(plan.attention);
  out["router_svc"] = {{"parameters", 0}, {"bytes", 0}, {"note", "tokenizer only"}};
  nlohmann::json shards = nlohmann::json::array();
  for (const ExpertShard& shard : plan.shards) {
    nlohmann::json item = TallyJson(shard.tally);
    item["first_expert"] = shard.first_expert;
    item["num_experts"] = shard.num_experts;
    shards.push_back(item);
  }
  out["expert_shards"] = shards;
  out["routed_experts"] = TallyJson(plan.routed);
  out["mtp_layers"] = TallyJson(plan.mtp);
  out["kv_cache"] = {{"values_per_token", plan.kv_values_per_token},
                     {"element_bytes", plan.kv_element_bytes},
                     {"bytes_per_token", plan.kv_values_per_token * plan.kv_element_bytes},
                     {"max_positions", config.max_position_embeddings},
                     {"bytes_at_max_positions",
                      plan.kv_values_per_token * plan.kv_element_bytes * config.max_position_embeddings}};
  if (checkpoint != nullptr) {
    out["checkpoint"] = {{"tensors", checkpoint->tensors},
                         {"attention_bytes", checkpoint->attention_bytes},
                         {"expert_bytes", checkpoint->expert_bytes},
                         {"other_bytes", checkpoint->other_bytes},
                         {"missing", checkpoint->missing},
                         {"mismatched", checkpoint->mismatched}};
  }
  std::cout << out.dump(2) << "\n";
}

void PrintText(const std::string& source, const ModelConfig& config, const MemoryPlan& plan,
               const CheckpointSummary* checkpoint) {
  const int64_t total = plan.attention.parameters + plan.routed.parameters;
  std::cout << "model: " << config.model_type << " (" << source << "), serving dtype " << DtypeName(plan.dtype)
            << (plan.dtype == ServingDtype::kFP8 ? " (e4m3 projections + float32 block scales, rest bf16)" : "")
            << "\n";
  std::cout << absl::StrFormat("parameters: %s total = %s non-expert + %s routed experts (%d MoE layers x %d)\n",
                               Grouped(total), Grouped(plan.attention.parameters), Grouped(plan.routed.parameters),
                               plan.moe_layers, config.n_routed_experts);
  std::cout << absl::StrFormat("activated per token: %s (non-expert + %d routed experts per MoE layer)\n",
                               Grouped(plan.activated_parameters), config.num_experts_per_tok);
  if (config.num_nextn_predict_layers > 0) {
    std::cout << absl::StrFormat(
        "not served: %d multi-token-prediction layer(s), %s parameters as stored (incl. embedding/head copies); "
        "checkpoint total %s\n",
        config.num_nextn_predict_layers, Grouped(plan.mtp.parameters), Grouped(total + plan.mtp.parameters));
  }
  std::cout << "\nservice                       parameters          memory\n";
  auto row = [](const std::string& name, int64_t parameters, uint64_t bytes) {
    std::cout << absl::StrFormat("%-28s %18s  %12s\n", name, Grouped(parameters), Bytes(bytes));
  };
  row("attention-svc", plan.attention.parameters, plan.attention.bytes);
  for (size_t s = 0; s < plan.shards.size(); ++s) {
    const ExpertShard& shard = plan.shards[s];
    row(absl::StrFormat("expert-svc %d/%d [%d, %d)", s, plan.shards.size(), shard.first_expert,
                        shard.first_expert + shard.num_experts),
        shard.tally.parameters, shard.tally.bytes);
  }
  row("router-svc (tokenizer only)", 0, 0);
  row("total", total, plan.attention.bytes + plan.routed.bytes);
  const uint64_t per_token = plan.kv_values_per_token * plan.kv_element_bytes;
  std::cout << absl::StrFormat(
      "\nlatent KV cache (attention-svc): %d layers x (%d latent + %d rope) = %s values/token, %s bytes/token "
      "(%d-byte elements); %s positions: %s per sequence\n",
      config.num_hidden_layers, config.kv_lora_rank, config.qk_rope_head_dim, Grouped(plan.kv_values_per_token),
      Grouped(per_token), plan.kv_element_bytes, Grouped(config.max_position_embeddings),
      Bytes(per_token * config.max_position_embeddings));
  if (checkpoint != nullptr) {
    std::cout << absl::StrFormat("\ncheckpoint on disk: %d tensors; attention-svc %s, routed experts %s, other %s\n",
                                 checkpoint->tensors, Bytes(checkpoint->attention_bytes),
                                 Bytes(checkpoint->expert_bytes), Bytes(checkpoint->other_bytes));
    for (const auto* list : {&checkpoint->missing, &checkpoint->mismatched}) {
      if (list->empty()) continue;
      std::cout << (list == &checkpoint->missing ? "MISSING" : "WRONG SHAPE") << " (" << list->size() << "):";
      for (size_t i = 0; i < list->size() && i < 5; ++i) std::cout << " " << (*list)[i];
      std::cout << (list->size() > 5 ? " ..." : "") << "\n";
    }
  }
}

absl::Status Run() {
  const std::string model = absl::GetFlag(FLAGS_model), config_path = absl::GetFlag(FLAGS_config);
  if (model.empty() == config_path.empty()) return absl::InvalidArgumentError("give exactly one of --model or --config");
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
  if (!model.empty()) {
    EXPERTMESH_ASSIGN_OR_RETURN(checkpoint, Checkpoint::Open(model));  // headers only, no tensor bytes
    config = checkpoint->config();
  } else {
    EXPERTMESH_ASSIGN_OR_RETURN(config, ModelConfig::FromFile(config_path));
  }
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  ServingDtype dtype = config.fp8_block_quantized ? ServingDtype::kFP8 : ServingDtype::kBF16;
  if (dtype_name == "bf16") {
    dtype = ServingDtype::kBF16;
  } else if (dtype_name == "fp8") {
    dtype = ServingDtype::kFP8;
  } else if (dtype_name == "f32") {
    dtype = ServingDtype::kF32;
  } else if (!dtype_name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--dtype must be bf16, fp8 or f32, got '", dtype_name, "'"));
  }
  EXPERTMESH_ASSIGN_OR_RETURN(MemoryPlan plan, PlanMemory(config, dtype, absl::GetFlag(FLAGS_expert_shards)));
  std::optional<CheckpointSummary> summary;
  if (checkpoint) {
    EXPERTMESH_ASSIGN_OR_RETURN(summary, SummarizeCheckpoint(*checkpoint));
  }
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(config, plan, summary ? &*summary : nullptr);
  } else {
    PrintText(model.empty() ? config_path : model, config, plan, summary ? &*summary : nullptr);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace expertmesh

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "expertmesh-inspect (--model DIR | --config FILE) [--expert-shards N] [--dtype bf16|fp8|f32] [--json]");
  expertmesh::AcceptDashedFlagNames(argc, argv);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::cerr << "error: unexpected argument '" << positional[1] << "'\n";
    return 2;
  }
  absl::Status status = expertmesh::Run();
  if (!status.ok()) {
    std::cerr << "error: " << status << "\n";
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
