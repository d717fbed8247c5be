// The expertmesh-generate command line against Hugging Face: on the v3_tiny and v2_lite_tiny
// fixtures, for every reference case, the 16 greedy ids it prints and the last prompt position's
// logits it writes with --logits-json must match reference.json (max |diff| <= 1e-4), with plain
// and weight-absorbed prefill; bad input exits non-zero with a message.
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/conformance/reference_fixture.h"

namespace expertmesh::conformance {
namespace {

struct ProcessResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

ProcessResult Generate(const std::string& arguments) {
  const char* binary_dir = std::getenv("EXPERTMESH_BINARY_DIR");
  const std::string binary =
      (binary_dir != nullptr ? std::string(binary_dir) : std::string("build")) + "/bin/expertmesh-generate";
  ProcessResult result;
  FILE* pipe = popen((binary + " " + arguments + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t read = 0;
  while ((read = fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, read);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The ids after "generated ids: " in the output.
std::vector<int32_t> GeneratedIds(const std::string& output) {
  const std::string marker = "generated ids: ";
  const size_t at = output.find(marker);
  if (at == std::string::npos) return {};
  const std::string line = output.substr(at + marker.size(), output.find('\n', at) - at - marker.size());
  std::vector<int32_t> ids;
  for (absl::string_view piece : absl::StrSplit(line, ',', absl::SkipEmpty())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(piece, &id)) return {};
    ids.push_back(id);
  }
  return ids;
}

class GenerateCliTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerateCliTest, GreedyIdsAndLogitsMatchReference) {
  const std::filesystem::path fixture = SourceDir() / "tests/fixtures" / GetParam();
  const Reference reference = LoadReference(fixture / "reference.json");
  const std::filesystem::path logits_path =
      std::filesystem::temp_directory_path() / ("expertmesh_generate_logits_" + GetParam() + ".json");
  for (const char* prefill : {"", " --absorbed-prefill"}) {
    for (size_t c = 0; c < reference.cases.size(); ++c) {
      const ReferenceCase& expected = reference.cases[c];
      std::filesystem::remove(logits_path);
      const ProcessResult run = Generate("--model " + fixture.string() + " --ids " +
                                         absl::StrJoin(expected.prompt_ids, ",") + " --max-new-tokens 16" +
                                         " --logits-json " + logits_path.string() + prefill);
      ASSERT_EQ(run.exit_code, 0) << run.output;
      EXPECT_EQ(GeneratedIds(run.output), expected.greedy_ids) << "case " << c << prefill << "\n" << run.output;
      std::ifstream in(logits_path);
      ASSERT_TRUE(in.good()) << "no --logits-json output";
      const std::vector<float> logits = nlohmann::json::parse(in).get<std::vector<float>>();
      ASSERT_EQ(logits.size(), expected.logits.back().size());
      const LogitError error = CompareLogits(logits, expected.logits.back());
      EXPECT_LE(error.max_abs, 1e-4) << "case " << c << prefill;
    }
  }
  std::filesystem::remove(logits_path);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GenerateCliTest, ::testing::Values("v3_tiny", "v2_lite_tiny"));

TEST(GenerateCliBadInputTest, ExitsNonZeroWithAMessage) {
  const std::string model = (SourceDir() / "tests/fixtures/v3_tiny").string();
  ProcessResult run = Generate("--model " + model + " --ids 5,999");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("999"), std::string::npos) << run.output;
  run = Generate("--model " + model + " --ids 5,x");
  EXPECT_EQ(run.exit_code, 2);
  run = Generate("--model " + model + " --prompt hello");  // the fixture has no tokenizer.json
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("tokenizer.json"), std::string::npos) << run.output;
  run = Generate("--model /nonexistent --ids 1");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("/nonexistent"), std::string::npos) << run.output;
}

TEST(GenerateCliPromptTest, TokenizesTextWithTheBundledTokenizer) {
  const ProcessResult run =
      Generate("--model " + (SourceDir() / "models/prose").string() + " --prompt 'The cat' --max-new-tokens 4");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(GeneratedIds(run.output).size(), 4u) << run.output;
  EXPECT_NE(run.output.find("text: "), std::string::npos) << run.output;
}

}  // namespace
}  // namespace expertmesh::conformance
