// expertmesh-generate: runs the CPU reference model in one process. Loads a checkpoint directory,
// takes a prompt as text (needs DIR/tokenizer.json) or token ids, generates greedily or with
// temperature/top-p sampling, prints the generated ids (and text), and can dump the logits of the
// last prompt position as JSON. Progress goes to stderr; bad input exits non-zero.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/cli/command_line.h"
#include "engine/model/generator.h"
#include "engine/model/weight_loader.h"
#include "engine/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + safetensors [+ tokenizer.json])");
ABSL_FLAG(std::string, prompt, "", "prompt text (needs tokenizer.json in --model)");
ABSL_FLAG(std::string, ids, "", "prompt token ids, comma separated (instead of --prompt)");
ABSL_FLAG(int64_t, max_new_tokens, 32, "number of tokens to generate");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature; 0 = greedy");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(std::string, stop_ids, "", "comma-separated token ids that end generation");
ABSL_FLAG(std::string, logits_json, "", "write the last prompt position's logits to this file as a JSON array");
ABSL_FLAG(bool, absorbed_prefill, false, "use weight-absorbed attention for the prompt too");

namespace expertmesh {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const char* flag) {
  std::vector<int32_t> ids;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(piece), &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", piece, "' is not a token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::Status WriteLogitsJson(const std::string& path, const std::vector<float>& logits) {
  std::ofstream out(path);
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  out << "[";
  char buffer[32];
  for (size_t i = 0; i < logits.size(); ++i) {
    std::snprintf(buffer, sizeof(buffer), "%.9g", double(logits[i]));  // round-trips float32
    out << (i ? "," : "") << buffer;
  }
  out << "]\n";
  return out.good() ? absl::OkStatus() : absl::DataLossError(absl::StrCat("writing ", path, " failed"));
}

absl::Status Run() {
  const std::filesystem::path directory = absl::GetFlag(FLAGS_model);
  if (directory.empty()) return absl::InvalidArgumentError("--model is required");
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  const std::string ids_text = absl::GetFlag(FLAGS_ids);
  if (prompt.empty() == ids_text.empty()) {
    return absl::InvalidArgumentError("give exactly one of --prompt or --ids");
  }
  GenerateOptions options;
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  options.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  options.sampling.seed = absl::GetFlag(FLAGS_seed);
  if (options.max_new_tokens < 0) return absl::InvalidArgumentError("--max-new-tokens must be >= 0");
  {
    absl::Status valid = ValidateSamplingParams(options.sampling);
    if (!valid.ok()) return valid;
  }
  {
    auto stop = ParseIds(absl::GetFlag(FLAGS_stop_ids), "stop-ids");
    if (!stop.ok()) return stop.status();
    options.stop_token_ids = *stop;
  }

  const std::filesystem::path tokenizer_path = directory / "tokenizer.json";
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(tokenizer_path)) {
    auto loaded = Tokenizer::FromFile(tokenizer_path);
    if (!loaded.ok()) return loaded.status();
    tokenizer = std::move(loaded).value();
  }
  std::vector<int32_t> prompt_ids;
  if (!prompt.empty()) {
    if (!tokenizer) {
      return absl::InvalidArgumentError(absl::StrCat("--prompt needs ", tokenizer_path.string(), "; use --ids"));
    }
    auto encoded = tokenizer->Encode(prompt);
    if (!encoded.ok()) return encoded.status();
    prompt_ids.assign(encoded->begin(), encoded->end());
  } else {
    auto parsed = ParseIds(ids_text, "ids");
    if (!parsed.ok()) return parsed.status();
    prompt_ids = *parsed;
  }
  if (prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");

  ModelOptions model_options;
  if (absl::GetFlag(FLAGS_absorbed_prefill)) model_options.prefill_attention = AttentionAlgorithm::kAbsorbed;
  int64_t last_reported = -1;
  auto progress = [&](const LoadProgress& p) {
    // Report about every 5% and at the end.
    const int64_t bucket = p.tensors_total ? p.tensors_loaded * 20 / p.tensors_total : 0;
    if (bucket != last_reported || p.tensors_loaded == p.tensors_total) {
      last_reported = bucket;
      std::cerr << "\r" << p.ToString() << std::flush;
    }
  };
  auto loaded = LoadModelFromDirectory(directory, model_options, progress);
  std::cerr << "\n";
  if (!loaded.ok()) return loaded.status();
  const int64_t vocab = loaded->config.vocab_size;
  for (int32_t id : prompt_ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " outside the vocabulary [0, ", vocab, ")"));
    }
  }

  Generator generator(*loaded->model);
  std::unique_ptr<StreamingDecoder> stream;
  if (tokenizer) stream = std::make_unique<StreamingDecoder>(*tokenizer);
  auto result = generator.Generate(prompt_ids, options, [&](int32_t token) {
    if (stream) std::cerr << stream->Add(token) << std::flush;
    return true;
  });
  if (stream) std::cerr << stream->Finish() << "\n";
  if (!result.ok()) return result.status();

  if (!absl::GetFlag(FLAGS_logits_json).empty()) {
    absl::Status written = WriteLogitsJson(absl::GetFlag(FLAGS_logits_json), result->prompt_logits);
    if (!written.ok()) return written;
  }
  std::cout << "prompt ids: " << absl::StrJoin(prompt_ids, ",") << "\n";
  std::cout << "generated ids: " << absl::StrJoin(result->token_ids, ",") << "\n";
  if (tokenizer) {
    auto text = tokenizer->Decode(result->token_ids);
    if (!text.ok()) return text.status();
    std::cout << "text: " << *text << "\n";
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace expertmesh

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "expertmesh-generate --model DIR (--prompt TEXT | --ids 1,2,3) [--max-new-tokens N] "
      "[--temperature T --top-p P --seed S] [--logits-json FILE]");
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
