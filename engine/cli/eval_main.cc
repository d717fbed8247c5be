// expertmesh-eval: held-out loss of a checkpoint on the CPU engine — mean next-token cross-entropy
// (nats/token) over non-overlapping windows, each text file encoded once (with BOS), the protocol
// of tools/train/train_tiny_family.py's eval_loss: windows start every W tokens, take W inputs and
// the W following targets (the last window may be shorter), each evaluated from an empty cache.
// Several files share one model load; results go to stdout (text or --json), progress to stderr.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/model/weight_loader.h"
#include "engine/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + safetensors)");
ABSL_FLAG(std::string, text, "", "UTF-8 text file(s) to evaluate, comma separated");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer.json (default: MODEL/tokenizer.json)");
ABSL_FLAG(int64_t, window, 256, "tokens per window (model inputs; targets are the next tokens)");
ABSL_FLAG(int64_t, batch, 8, "windows per engine step");
ABSL_FLAG(bool, json, false, "print one JSON object per file instead of text");

namespace expertmesh {
namespace {

struct EvalResult {
  double total_nats = 0.0;
  int64_t tokens = 0;  // scored targets
  int64_t windows = 0;
  uint64_t text_bytes = 0;
  double loss() const { return tokens ? total_nats / static_cast<double>(tokens) : 0.0; }
  double bits_per_byte() const { return text_bytes ? total_nats / std::log(2.0) / static_cast<double>(text_bytes) : 0.0; }
};

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Cross-entropy of `target` under `logits` (float32 logits, log-sum-exp in double).
double TokenNats(std::span<const float> logits, int32_t target) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float logit : logits) sum += std::exp(static_cast<double>(logit) - max_logit);
  return std::log(sum) + max_logit - static_cast<double>(logits[target]);
}

absl::StatusOr<EvalResult> Evaluate(const DeepseekModel& model, const std::vector<int32_t>& ids, int64_t window,
                                    int64_t batch, const std::string& label) {
  EvalResult result;
  const int64_t vocab = model.config().vocab_size;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " outside the vocabulary"));
  }
  // Window starts: 0, W, 2W, ... while at least one target remains.
  std::vector<int64_t> starts;
  for (int64_t start = 0; start + 1 < static_cast<int64_t>(ids.size()); start += window) starts.push_back(start);
  for (size_t first = 0; first < starts.size(); first += batch) {
    const size_t last = std::min(starts.size(), first + static_cast<size_t>(batch));
    std::vector<LatentKvCache> caches;
    caches.reserve(last - first);
    std::vector<SequenceInput> inputs;
    for (size_t w = first; w < last; ++w) {
      const int64_t start = starts[w];
      const int64_t length = std::min<int64_t>(window, static_cast<int64_t>(ids.size()) - 1 - start);
      caches.push_back(model.NewCache());
      inputs.push_back({&caches.back(), std::span<const int32_t>(ids.data() + start, length), /*all_logits=*/true});
    }
    absl::StatusOr<std::vector<Tensor>> logits = model.Step(inputs);
    if (!logits.ok()) return logits.status();
    for (size_t k = 0; k < inputs.size(); ++k) {
      const int64_t start = starts[first + k];
      const Tensor& rows = (*logits)[k];
      for (int64_t t = 0; t < static_cast<int64_t>(inputs[k].token_ids.size()); ++t) {
        result.total_nats += TokenNats(rows.row(t), ids[start + t + 1]);
        ++result.tokens;
      }
      ++result.windows;
    }
    std::cerr << "\r" << label << ": " << result.windows << "/" << starts.size() << " windows, loss so far "
              << absl::StrFormat("%.4f", result.loss()) << std::flush;
  }
  std::cerr << "\n";
  return result;
}

absl::Status Run() {
  const std::filesystem::path directory = absl::GetFlag(FLAGS_model);
  if (directory.empty()) return absl::InvalidArgumentError("--model is required");
  std::vector<std::string> files = absl::StrSplit(absl::GetFlag(FLAGS_text), ',', absl::SkipEmpty());
  if (files.empty()) return absl::InvalidArgumentError("--text is required");
  const int64_t window = absl::GetFlag(FLAGS_window);
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  if (window < 1) return absl::InvalidArgumentError("--window must be >= 1");
  if (batch < 1) return absl::InvalidArgumentError("--batch must be >= 1");
  std::filesystem::path tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  if (tokenizer_path.empty()) tokenizer_path = directory / "tokenizer.json";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();

  std::vector<std::string> texts;
  for (const std::string& file : files) {
    absl::StatusOr<std::string> text = ReadFile(file);
    if (!text.ok()) return text.status();
    texts.push_back(*std::move(text));
  }
  int64_t last_bucket = -1;
  auto progress = [&](const LoadProgress& p) {
    const int64_t bucket = p.tensors_total ? p.tensors_loaded * 20 / p.tensors_total : 0;
    if (bucket != last_bucket || p.tensors_loaded == p.tensors_total) {
      last_bucket = bucket;
      std::cerr << "\r" << p.ToString() << std::flush;
    }
  };
  absl::StatusOr<LoadedModel> loaded = LoadModelFromDirectory(directory, ModelOptions{}, progress);
  std::cerr << "\n";
  if (!loaded.ok()) return loaded.status();

  for (size_t f = 0; f < files.size(); ++f) {
    auto encoded = (*tokenizer)->Encode(texts[f]);
    if (!encoded.ok()) return encoded.status();
    const std::vector<int32_t> ids(encoded->begin(), encoded->end());
    absl::StatusOr<EvalResult> result = Evaluate(*loaded->model, ids, window, batch, files[f]);
    if (!result.ok()) return result.status();
    result->text_bytes = texts[f].size();
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << absl::StrFormat(
          "{\"model\": \"%s\", \"text\": \"%s\", \"loss\": %.6f, \"bits_per_byte\": %.6f, \"tokens\": %d, "
          "\"windows\": %d, \"window\": %d}\n",
          directory.string(), files[f], result->loss(), result->bits_per_byte(), result->tokens, result->windows, window);
    } else {
      std::cout << absl::StrFormat("%s: %.4f nats/token (%.3f bits/byte) over %d tokens in %d windows of %d\n", files[f],
                                   result->loss(), result->bits_per_byte(), result->tokens, result->windows, window);
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace expertmesh

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("expertmesh-eval --model DIR --text FILE[,FILE...] [--window 256] [--batch 8] [--json]");
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
