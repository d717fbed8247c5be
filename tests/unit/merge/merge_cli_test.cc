// The command-line tools as users run them: expertmesh-merge (exit codes, error text, output
// layout) and expertmesh-eval, whose held-out loss of the bundled code parent must match
// transformers' number in models/train_summary.json to 1e-3 (same windows, same BOS protocol).
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/merge/merge_test_util.h"

namespace expertmesh {
namespace {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t read = 0;
  while ((read = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, read);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::filesystem::path SourceDir() {
  const char* dir = std::getenv("EXPERTMESH_SOURCE_DIR");
  return dir ? dir : ".";
}

std::filesystem::path Tool(const std::string& name) {
  const char* dir = std::getenv("EXPERTMESH_BINARY_DIR");
  return std::filesystem::path(dir ? dir : "build") / "bin" / name;
}

TEST(MergeCliTest, MergesTheBundledParentsAndRejectsBadRecipes) {
  testing::TempDir dir;
  const std::filesystem::path models = SourceDir() / "models";
  testing::WriteTextFile(dir.path() / "good.json",
                         "{\"name\": \"chimera\", \"parents\": {\"prose\": \"" + (models / "prose").string() +
                             "\", \"code\": \"" + (models / "code").string() +
                             "\"}, \"lambdas\": [0, 1], \"base\": \"prose\"}");
  const CommandResult good =
      RunCommand(Tool("expertmesh-merge").string() + " " + (dir.path() / "good.json").string() + " " +
                 (dir.path() / "out").string());
  ASSERT_EQ(good.exit_code, 0) << good.output;
  EXPECT_NE(good.output.find("72 merged, 0 kept by delta, 57 copied"), std::string::npos) << good.output;
  for (const char* file : {"config.json", "model-00001-of-00001.safetensors", "model.safetensors.index.json",
                           "tokenizer.json", "generation_config.json", "merge_report.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.path() / "out" / file)) << file;
  }

  testing::WriteTextFile(dir.path() / "bad.json",
                         "{\"name\": \"x\", \"parents\": {\"prose\": \"" + (models / "prose").string() +
                             "\"}, \"lambdas\": [1], \"base\": \"code\"}");
  const CommandResult bad = RunCommand(Tool("expertmesh-merge").string() + " " + (dir.path() / "bad.json").string() +
                                       " " + (dir.path() / "never").string());
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("base parent 'code' is not one of the parents"), std::string::npos) << bad.output;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "never"));

  const CommandResult busy = RunCommand(Tool("expertmesh-merge").string() + " " +
                                        (dir.path() / "good.json").string() + " " + (dir.path() / "out").string());
  EXPECT_EQ(busy.exit_code, 1) << busy.output;
  EXPECT_NE(busy.output.find("not an empty directory"), std::string::npos) << busy.output;
  EXPECT_EQ(RunCommand(Tool("expertmesh-merge").string() + " only-one-arg").exit_code, 2);
}

TEST(EvalCliTest, HeldOutLossMatchesTransformers) {
  const std::filesystem::path models = SourceDir() / "models";
  std::ifstream summary_file(models / "train_summary.json");
  const nlohmann::json summary = nlohmann::json::parse(summary_file);
  const double reference = summary["results"]["code"]["code"]["loss"].get<double>();

  const CommandResult result = RunCommand(Tool("expertmesh-eval").string() + " --json --model " +
                                          (models / "code").string() + " --text " +
                                          (models / "eval" / "code_heldout.txt").string());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const size_t json_at = result.output.rfind("{\"model\"");
  ASSERT_NE(json_at, std::string::npos) << result.output;
  const nlohmann::json row = nlohmann::json::parse(result.output.substr(json_at));
  EXPECT_EQ(row["tokens"], 27140);  // 27,141 ids with BOS -> 27,140 targets
  EXPECT_EQ(row["windows"], 107);
  EXPECT_NEAR(row["loss"].get<double>(), reference, 1e-3);

  EXPECT_EQ(RunCommand(Tool("expertmesh-eval").string() + " --model " + (models / "code").string()).exit_code, 2);
  EXPECT_NE(RunCommand(Tool("expertmesh-eval").string() + " --model " + (models / "code").string() +
                       " --text /nonexistent.txt").exit_code, 0);
}

}  // namespace
}  // namespace expertmesh
