// The admin API on a real fleet (expert-svc x2, attention-svc, router-svc): calls without the
// bearer token or with a wrong one are UNAUTHENTICATED and logged without the token; malformed
// recipes (unknown parent, lambda count, parents of other shapes or configs, delta < 0, bad dtype)
// and a blend one shard has no memory for are refused with nothing changed anywhere (the router
// aborts the shards that had prepared); the A/B split follows its weights and sticks per ab_key.
#include <atomic>
#include <fstream>
#include <map>
#include <thread>

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/integration/blends/blend_cluster.h"
#include "tests/unit/blends/blends_test_util.h"

namespace expertmesh::testing {
namespace {

class BlendsAdminTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir();
    BlendClusterOptions options;
    options.model_directory = SourcePath("models/prose");
    // Room for three parents on shard 0 (3.4 MiB each), not for a fourth set of its own.
    options.shard0_flags = {"--weight-budget-mb=11"};
    auto cluster = BlendCluster::Start(options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
    ASSERT_TRUE(cluster_->LoadParent("code", SourcePath("models/code")).ok());
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete scratch_;
  }

  static v1::FleetWeightSets List() {
    auto listed = cluster_->List();
    EXPECT_TRUE(listed.ok()) << listed.status();
    return listed.ok() ? *listed : v1::FleetWeightSets();
  }

  // `call` fails with `code` (message containing `part`) and the fleet is exactly as before.
  template <typename Call>
  void ExpectRefusedWithoutChange(Call call, grpc::StatusCode code, const std::string& part) {
    const v1::FleetWeightSets before = List();
    const grpc::Status status = call();
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_NE(status.error_message().find(part), std::string::npos) << status.error_message();
    const v1::FleetWeightSets after = List();
    std::string difference;
    google::protobuf::util::MessageDifferencer differencer;
    differencer.ReportDifferencesToString(&difference);
    EXPECT_TRUE(differencer.Compare(before, after)) << difference;
  }

  static grpc::Status CreateBlend(const v1::CreateBlendRequest& request) {
    v1::FleetWeightSet response;
    auto context = cluster_->AdminContext();
    return cluster_->router_admin().CreateBlend(context.get(), request, &response);
  }
  static grpc::Status CreateBlend(const v1::BlendRecipe& recipe) {
    v1::CreateBlendRequest request;
    *request.mutable_recipe() = recipe;
    return CreateBlend(request);
  }
  static grpc::Status LoadParent(const std::string& name, const std::string& checkpoint) {
    const absl::Status status = cluster_->LoadParent(name, checkpoint).status();
    return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
  }

  static ScratchDir* scratch_;
  static BlendCluster* cluster_;
};

ScratchDir* BlendsAdminTest::scratch_ = nullptr;
BlendCluster* BlendsAdminTest::cluster_ = nullptr;

TEST_F(BlendsAdminTest, CallsWithoutTheRightTokenAreUnauthenticated) {
  for (const std::string& token : {std::string(), std::string("wrong-token")}) {
    SCOPED_TRACE(token.empty() ? "no token" : "wrong token");
    ExpectRefusedWithoutChange(
        [&] {
          v1::CreateBlendRequest request;
          *request.mutable_recipe() = TwoParentRecipe("sneaky", "prose", "code", 0.5);
          v1::FleetWeightSet response;
          auto context = cluster_->AdminContext(token);
          return cluster_->router_admin().CreateBlend(context.get(), request, &response);
        },
        grpc::StatusCode::UNAUTHENTICATED, "admin call CreateBlend");
    v1::FleetWeightSets fleet;
    auto router_context = cluster_->AdminContext(token);
    EXPECT_EQ(cluster_->router_admin().ListWeightSets(router_context.get(), {}, &fleet).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    v1::TrafficSplit split;
    auto split_context = cluster_->AdminContext(token);
    EXPECT_EQ(cluster_->router_admin().SetTrafficSplit(split_context.get(), {}, &split).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    for (int shard = 0; shard < 2; ++shard) {
      v1::LoadParentRequest load;
      load.set_name("sneaky");
      load.set_checkpoint(SourcePath("models/code"));
      v1::WeightSetResponse response;
      auto context = cluster_->AdminContext(token);
      EXPECT_EQ(cluster_->shard_admin(shard).LoadParent(context.get(), load, &response).error_code(),
                grpc::StatusCode::UNAUTHENTICATED);
    }
  }
  // Logged, with the reason, never with a token.
  const std::string router_log = cluster_->router().ReadLog();
  EXPECT_NE(router_log.find("admin call CreateBlend from"), std::string::npos);
  EXPECT_NE(router_log.find("rejected: wrong token"), std::string::npos);
  EXPECT_NE(router_log.find("rejected: no \"authorization: Bearer <token>\" metadata"), std::string::npos);
  for (ServiceProcess* process : {&cluster_->router(), &cluster_->shard(0), &cluster_->shard(1)}) {
    EXPECT_EQ(process->ReadLog().find(cluster_->token()), std::string::npos) << process->log_path();
    EXPECT_EQ(process->ReadLog().find("wrong-token"), std::string::npos) << process->log_path();
  }
}

TEST_F(BlendsAdminTest, MalformedRecipesAreInvalidAndChangeNothing) {
  ExpectRefusedWithoutChange([] { return CreateBlend(TwoParentRecipe("bad", "prose", "nope", 0.5)); },
                             grpc::StatusCode::INVALID_ARGUMENT, "unknown parent 'nope'");
  ExpectRefusedWithoutChange([] { return CreateBlend(TwoParentRecipe("bad", "prose", "code", 0.5, -0.1)); },
                             grpc::StatusCode::INVALID_ARGUMENT, "delta must be a finite number >= 0");
  v1::BlendRecipe dtype = TwoParentRecipe("bad", "prose", "code", 0.5);
  dtype.set_output_dtype("fp16");
  ExpectRefusedWithoutChange([&] { return CreateBlend(dtype); }, grpc::StatusCode::INVALID_ARGUMENT, "output_dtype");
  v1::CreateBlendRequest lambdas;
  lambdas.set_recipe_json(absl::StrCat(R"({"name": "bad", "parents": {"prose": ")", SourcePath("models/prose"),
                                       R"(", "code": ")", SourcePath("models/code"),
                                       R"("}, "lambdas": [0.5], "base": "prose"})"));
  ExpectRefusedWithoutChange([&] { return CreateBlend(lambdas); }, grpc::StatusCode::INVALID_ARGUMENT,
                             "1 values for 2 parents");
  // A parent whose experts have another shape cannot even be loaded.
  const auto narrow = WriteTinyParent(scratch_->path(), "narrow", 3);
  ExpectRefusedWithoutChange([&] { return LoadParent("narrow", narrow.string()); }, grpc::StatusCode::INVALID_ARGUMENT,
                             "hidden_size = 32");
  // Parents of one shape whose configs differ elsewhere cannot be blended.
  const auto eps = scratch_->path() / "eps";
  std::filesystem::create_directories(eps);
  std::filesystem::copy_file(SourcePath("models/code/model.safetensors"), eps / "model.safetensors");
  std::ifstream config_in(SourcePath("models/code/config.json"));
  std::string config((std::istreambuf_iterator<char>(config_in)), std::istreambuf_iterator<char>());
  const size_t at = config.find("\"rms_norm_eps\": 1e-06");
  ASSERT_NE(at, std::string::npos);
  config.replace(at, 21, "\"rms_norm_eps\": 1e-05");
  std::ofstream(eps / "config.json") << config;
  ASSERT_TRUE(cluster_->LoadParent("eps", eps.string()).ok());
  ExpectRefusedWithoutChange([] { return CreateBlend(TwoParentRecipe("bad", "prose", "eps", 0.5)); },
                             grpc::StatusCode::INVALID_ARGUMENT, "rms_norm_eps");
}

TEST_F(BlendsAdminTest, ABlendOneShardCannotHoldIsAbortedEverywhere) {
  // Shard 0 holds prose, code (and maybe eps) within its 11 MiB; a delta-0 blend needs 3.4 MiB more.
  if (cluster_->List()->shards(0).resident_bytes() < 10'000'000) {
    ASSERT_TRUE(cluster_->LoadParent("third", SourcePath("models/code")).ok());
  }
  ExpectRefusedWithoutChange([] { return CreateBlend(TwoParentRecipe("big", "prose", "code", 0.5)); },
                             grpc::StatusCode::RESOURCE_EXHAUSTED, "aborted on every shard; nothing changed");
  // A blend that shares every tensor with its base costs nothing and fits.
  auto kept = cluster_->CreateBlend(TwoParentRecipe("kept", "prose", "code", 0.5, /*delta=*/10.0));
  ASSERT_TRUE(kept.ok()) << kept.status();
  for (const auto& shard : kept->shards()) {
    EXPECT_GT(shard.status().referenced_bytes(), 0u);
    EXPECT_EQ(shard.status().unique_bytes(), 0u) << shard.address();
    EXPECT_EQ(shard.status().shared_bytes(), shard.status().referenced_bytes());
  }
}

TEST_F(BlendsAdminTest, UnknownBlendsAndBadSplitsAreRefused) {
  v1::GenerateRequest request = IdsRequest({5, 6}, 2);
  request.set_blend("no-such-blend");
  EXPECT_EQ(cluster_->router_client().Generate(request).status.error_code(), grpc::StatusCode::NOT_FOUND);
  auto split = [&](std::map<std::string, double> weights) {
    v1::TrafficSplit request_split;
    for (const auto& [name, weight] : weights) (*request_split.mutable_weights())[name] = weight;
    v1::TrafficSplit response;
    auto context = cluster_->AdminContext();
    return cluster_->router_admin().SetTrafficSplit(context.get(), request_split, &response);
  };
  EXPECT_EQ(split({{"nope", 1.0}}).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(split({{"prose", -1.0}}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(split({{"prose", 0.0}}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::DropBlendRequest drop;
  drop.set_name("prose");
  v1::FleetWeightSets dropped;
  auto context = cluster_->AdminContext();
  EXPECT_EQ(cluster_->router_admin().DropBlend(context.get(), drop, &dropped).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION)
      << "the default";
}

TEST_F(BlendsAdminTest, SplitFollowsItsWeightsAndSticksPerKey) {
  auto mix = cluster_->CreateBlend(TwoParentRecipe("mix", "prose", "code", 0.5, 10.0));
  ASSERT_TRUE(mix.ok()) << mix.status();
  v1::TrafficSplit split;
  (*split.mutable_weights())["prose"] = 1.0;
  (*split.mutable_weights())["mix"] = 3.0;
  v1::TrafficSplit answer;
  auto context = cluster_->AdminContext();
  ASSERT_TRUE(cluster_->router_admin().SetTrafficSplit(context.get(), split, &answer).ok());

  constexpr int kKeys = 240;
  std::vector<std::string> blend_of_key(kKeys);
  std::vector<std::thread> clients;
  std::atomic<int> failures{0};
  for (int client = 0; client < 4; ++client) {
    clients.emplace_back([&, client] {
      RouterClient router(cluster_->router().address());
      for (int key = client; key < kKeys; key += 4) {
        v1::GenerateRequest request = IdsRequest({7, 8, 9}, 1);
        request.set_ab_key(absl::StrCat("user-", key));
        const RouterOutput output = router.Generate(request);
        if (!output.status.ok()) ++failures;
        blend_of_key[key] = output.usage.blend();
      }
    });
  }
  for (auto& client : clients) client.join();
  ASSERT_EQ(failures.load(), 0);
  int mixed = 0;
  for (const std::string& blend : blend_of_key) {
    EXPECT_TRUE(blend == "mix" || blend == "prose") << blend;
    mixed += blend == "mix";
  }
  // n = 240, p = 0.75: standard deviation 0.028; 0.12 is over 4 of them.
  EXPECT_NEAR(mixed / static_cast<double>(kKeys), 0.75, 0.12);
  // The same key gets the same blend again while the split is unchanged.
  for (int key = 0; key < 24; ++key) {
    v1::GenerateRequest request = IdsRequest({7, 8, 9}, 1);
    request.set_ab_key(absl::StrCat("user-", key));
    const RouterOutput again = cluster_->router_client().Generate(request);
    ASSERT_TRUE(again.status.ok());
    EXPECT_EQ(again.usage.blend(), blend_of_key[key]) << "key " << key;
  }
}

}  // namespace
}  // namespace expertmesh::testing
