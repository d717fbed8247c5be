// Dashed flag names for the service binaries, and the EOS ids attention-svc reads from a checkpoint.
#include "engine/rpc/command_line.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "absl/flags/flag.h"

#include "attention-svc/model_metadata.h"

ABSL_FLAG(int, test_shard_count, 0, "a dashed flag for ParseDashedCommandLine's test");

namespace expertmesh {
namespace {

TEST(CommandLineTest, DashesInFlagNamesBecomeUnderscores) {
  std::vector<std::string> raw = {"expert-svc", "--shard-index=2", "--num-shards", "4", "-max-message-mb=1",
                                  "--model=/a-b/c-d", "--", "--not-a-flag"};
  std::vector<char*> argv;
  for (auto& s : raw) argv.push_back(s.data());
  const auto normalized = rpc::NormalizeFlagNames(static_cast<int>(argv.size()), argv.data());
  EXPECT_EQ(normalized, (std::vector<std::string>{"expert-svc", "--shard_index=2", "--num_shards", "4",
                                                  "-max_message_mb=1", "--model=/a-b/c-d", "--", "--not-a-flag"}));
}

TEST(CommandLineTest, ParseDashedCommandLineSetsFlagsAndReturnsPositionals) {
  std::vector<std::string> raw = {"tool", "--test-shard-count=3", "list", "--", "--literal"};
  std::vector<char*> argv;
  for (auto& s : raw) argv.push_back(s.data());
  const std::vector<std::string> positional = rpc::ParseDashedCommandLine(static_cast<int>(argv.size()), argv.data());
  EXPECT_EQ(absl::GetFlag(FLAGS_test_shard_count), 3);
  EXPECT_EQ(positional, (std::vector<std::string>{"list", "--literal"}));
}

TEST(ModelMetadataTest, ReadsAndMergesEosIds) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "eos-model";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"eos_token_id": 7})";
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [7, 3]})";
  auto ids = attention_service::ReadEosTokenIds(dir);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{3, 7}));
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": "x"})";
  EXPECT_EQ(attention_service::ReadEosTokenIds(dir).status().code(), absl::StatusCode::kInvalidArgument);
  std::ofstream(dir / "generation_config.json") << "{not json";
  EXPECT_EQ(attention_service::ReadEosTokenIds(dir).status().code(), absl::StatusCode::kInvalidArgument);
  std::filesystem::remove(dir / "generation_config.json");
  std::ofstream(dir / "config.json") << R"({"eos_token_id": null})";
  EXPECT_TRUE(attention_service::ReadEosTokenIds(dir)->empty());
}

}  // namespace
}  // namespace expertmesh
