// A random-weight DeepSeek-V2-Lite-shaped checkpoint for the services benchmark: real widths
// (hidden 2048, 64 routed experts of 1408, top-6, 2 shared experts, MLA with kv_lora 512) but few
// layers and a smaller vocabulary, written as bf16 safetensors so expert-svc and attention-svc
// load it like any checkpoint. Reused when the directory already holds the same shape.
#pragma once

#include <cstdint>
#include <filesystem>

#include "absl/status/status.h"

namespace expertmesh::bench {

struct BenchModelShape {
  int64_t moe_layers = 2;  // after one dense layer
  int64_t vocab_size = 32000;
  int64_t hidden_size = 2048;
  int64_t n_routed_experts = 64;
  int64_t moe_intermediate_size = 1408;
  int64_t num_experts_per_tok = 6;
};

// Writes config.json and model-*.safetensors into `directory` (created), unless a previous run
// left the same shape there. Prints progress.
absl::Status EnsureBenchCheckpoint(const std::filesystem::path& directory, const BenchModelShape& shape);

}  // namespace expertmesh::bench
