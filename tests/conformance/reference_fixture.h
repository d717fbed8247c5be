// Reading a Hugging Face reference (reference.json written by tools/fixtures/make_fixtures.py or
// the model trainer): per case the prompt ids, float32 logits at every prompt position, router
// top-k ids per MoE layer (ascending per position) and 16 greedy ids; plus the error metrics the
// conformance tests report.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace expertmesh::conformance {

struct ReferenceCase {
  std::vector<int32_t> prompt_ids;
  std::vector<std::vector<float>> logits;  // [position][vocab]
  std::map<int64_t, std::vector<std::vector<int32_t>>> router_topk;  // layer -> [position][k], ascending
  std::vector<int32_t> greedy_ids;
};

struct Reference {
  std::string source;
  std::string dtype;
  std::vector<ReferenceCase> cases;
};

inline std::filesystem::path SourceDir() {
  const char* dir = std::getenv("EXPERTMESH_SOURCE_DIR");
  return dir != nullptr ? std::filesystem::path(dir) : std::filesystem::current_path();
}

// Throws (test-only code) on unreadable or malformed files, which fails the test loudly.
inline Reference LoadReference(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  const nlohmann::json root = nlohmann::json::parse(in);
  Reference reference;
  reference.source = root.at("source").get<std::string>();
  reference.dtype = root.at("dtype").get<std::string>();
  for (const nlohmann::json& item : root.at("cases")) {
    ReferenceCase c;
    c.prompt_ids = item.at("prompt_ids").get<std::vector<int32_t>>();
    c.logits = item.at("logits").get<std::vector<std::vector<float>>>();
    for (auto it = item.at("router_topk").begin(); it != item.at("router_topk").end(); ++it) {
      c.router_topk[std::stoll(it.key())] = it.value().get<std::vector<std::vector<int32_t>>>();
    }
    c.greedy_ids = item.at("greedy_ids").get<std::vector<int32_t>>();
    reference.cases.push_back(std::move(c));
  }
  return reference;
}

// Errors of one position's logits against the reference.
struct LogitError {
  double max_abs = 0.0;       // max_i |engine_i - reference_i|
  double relative = 0.0;      // max_abs / max_i |reference_i|
};

inline LogitError CompareLogits(std::span<const float> engine, std::span<const float> reference) {
  LogitError error;
  double scale = 0.0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const double diff = std::abs(double(engine[i]) - double(reference[i]));
    error.max_abs = std::isnan(diff) ? INFINITY : std::max(error.max_abs, diff);
    scale = std::max(scale, std::abs(double(reference[i])));
  }
  error.relative = scale > 0.0 ? error.max_abs / scale : error.max_abs;
  return error;
}

}  // namespace expertmesh::conformance
