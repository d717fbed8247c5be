// A live blend serves exactly what the offline merge serves: the fleet (expert-svc x2, attention,
// router) builds blend "live" from two parents through the admin API, expertmesh-merge writes the
// same recipe to disk, the fleet loads that checkpoint as a plain parent "offline", and both
// generate identical tokens and bit-identical logits. On two perturbed copies of the v3_tiny
// fixture (float32) and on the bundled prose/code models (bf16).
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/integration/blends/blend_cluster.h"

namespace expertmesh::testing {
namespace {

void WriteRecipe(const std::filesystem::path& path, const std::string& name, const std::filesystem::path& first,
                 const std::string& first_name, const std::filesystem::path& second, const std::string& second_name,
                 double lambda) {
  std::ofstream out(path);
  out << "{\"name\": \"" << name << "\", \"parents\": {\"" << first_name << "\": \"" << first.string() << "\", \""
      << second_name << "\": \"" << second.string() << "\"}, \"lambdas\": {\"" << first_name << "\": " << lambda
      << ", \"" << second_name << "\": " << 1.0 - lambda << "}, \"base\": \"" << first_name << "\"}\n";
}

GenerationOutput Generate(BlendCluster& cluster, const std::vector<int32_t>& prompt, const std::string& blend) {
  v1::SequenceRequest request = MakeRequest(prompt, 8, /*include_logits=*/true);
  request.set_blend(blend);
  return RunGenerate(cluster.attention_stub(), request);
}

// Builds "live" through the router and "offline" with expertmesh-merge, then compares them.
void ExpectLiveEqualsOffline(const std::filesystem::path& first, const std::string& first_name,
                             const std::filesystem::path& second, const std::string& second_name,
                             const std::vector<std::vector<int32_t>>& prompts) {
  ScratchDir scratch;
  const std::filesystem::path recipe = scratch.path() / "recipe.json";
  const std::filesystem::path offline = scratch.path() / "offline";
  WriteRecipe(recipe, "offline-merge", first, first_name, second, second_name, 0.3);
  const std::string command = absl::StrCat(BinaryPath("expertmesh-merge"), " ", recipe.string(), " ", offline.string(),
                                           " > ", (scratch.path() / "merge.log").string(), " 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  BlendClusterOptions options;
  options.model_directory = first.string();
  auto cluster = BlendCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->LoadParent(second_name, second.string()).ok());
  auto live = (*cluster)->CreateBlend(TwoParentRecipe("live", first_name, second_name, 0.3));
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(live->version(), 1u);
  ASSERT_TRUE((*cluster)->LoadParent("offline", offline.string()).ok());

  int differing_from_base = 0;
  for (const auto& prompt : prompts) {
    const GenerationOutput from_live = Generate(**cluster, prompt, "live");
    const GenerationOutput from_offline = Generate(**cluster, prompt, "offline");
    const GenerationOutput from_base = Generate(**cluster, prompt, first_name);
    ASSERT_TRUE(from_live.status.ok()) << from_live.status.error_message();
    ASSERT_TRUE(from_offline.status.ok()) << from_offline.status.error_message();
    EXPECT_EQ(from_live.usage.blend(), "live");
    EXPECT_EQ(from_live.usage.blend_version(), 1u);
    EXPECT_EQ(from_offline.usage.blend(), "offline");
    EXPECT_EQ(from_live.tokens, from_offline.tokens);
    ASSERT_EQ(from_live.logits.size(), from_offline.logits.size());
    for (size_t t = 0; t < from_live.logits.size(); ++t) {
      ASSERT_EQ(from_live.logits[t].size(), from_offline.logits[t].size());
      EXPECT_EQ(0, std::memcmp(from_live.logits[t].data(), from_offline.logits[t].data(),
                               from_live.logits[t].size() * sizeof(float)))
          << "token " << t << ": logits differ";
    }
    differing_from_base += from_live.logits[0] != from_base.logits[0];

    // Through the router (which pins the version) the tokens are the same too.
    v1::GenerateRequest request = IdsRequest(prompt, 8);
    request.set_blend("live");
    const RouterOutput routed = (*cluster)->router_client().Generate(request);
    ASSERT_TRUE(routed.status.ok()) << routed.status.error_message();
    EXPECT_EQ(routed.ids, from_live.tokens);
    EXPECT_EQ(routed.usage.blend(), "live");
    EXPECT_EQ(routed.usage.blend_version(), 1u);
  }
  EXPECT_EQ(differing_from_base, static_cast<int>(prompts.size())) << "the blend must change the model's output";
}

TEST(BlendsEquivalenceTest, PerturbedV3TinyCopies) {
  ScratchDir scratch;
  const auto first = scratch.path() / "v3a";
  const auto second = scratch.path() / "v3b";
  ASSERT_TRUE(WritePerturbedCopy(SourcePath("tests/fixtures/v3_tiny"), first, 0.3, 1).ok());
  ASSERT_TRUE(WritePerturbedCopy(SourcePath("tests/fixtures/v3_tiny"), second, 0.3, 2).ok());
  ExpectLiveEqualsOffline(first, "v3a", second, "v3b", {{1, 2, 3, 4, 5}, {17, 42}, {99}});
}

TEST(BlendsEquivalenceTest, BundledProseAndCode) {
  ExpectLiveEqualsOffline(SourcePath("models/prose"), "prose", SourcePath("models/code"), "code",
                          {{2, 300, 41, 87, 12}, {600, 601, 602}, {5}});
}

}  // namespace
}  // namespace expertmesh::testing
