// Swapping blends under sustained load (ctest label swap): four clients keep sending requests with
// A/B keys through the router while the operator loads a parent, creates blends, changes the
// split, makes a blend the default, replaces a blend by new versions and drops one. Checked for
// every response: it succeeded; the (blend, version) it reports was committed and current at some
// moment of its life; its tokens are exactly what that (blend, version) generates alone, so no
// request mixed two blends or versions. Afterwards every superseded or dropped version is gone
// from the shards.
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/integration/blends/blend_cluster.h"

namespace expertmesh::testing {
namespace {

using Clock = std::chrono::steady_clock;
using Key = std::pair<std::string, uint64_t>;  // (blend, version)

const std::vector<std::vector<int32_t>> kPrompts = {{2, 300, 41, 87, 12}, {600, 601, 602}, {5, 77}};
constexpr uint32_t kMaxTokens = 6;

struct Response {
  Clock::time_point start, end;
  size_t prompt = 0;
  RouterOutput output;
};

// When each version was current: [from, until).
struct Lifetime {
  Clock::time_point from;
  Clock::time_point until = Clock::time_point::max();
};

class SwapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BlendClusterOptions options;
    options.model_directory = SourcePath("models/prose");
    auto cluster = BlendCluster::Start(options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    Committed("prose", 1, Clock::now() - std::chrono::hours(1));
  }

  // The greedy tokens of `prompt` with (blend, version) pinned, asked of attention directly.
  std::vector<int32_t> Reference(const Key& key, size_t prompt) {
    v1::SequenceRequest request = MakeRequest(kPrompts[prompt], kMaxTokens, /*include_logits=*/false);
    request.set_blend(key.first);
    request.set_blend_version(key.second);
    const GenerationOutput output = RunGenerate(cluster_->attention_stub(), request);
    EXPECT_TRUE(output.status.ok()) << key.first << " v" << key.second << ": " << output.status.error_message();
    return output.tokens;
  }

  // `version` of `name` was committed by a call that ran from `called` to `returned`: the new
  // version may be served from `called` on, the previous one until `returned` (both lenient).
  void Committed(const std::string& name, uint64_t version, Clock::time_point called,
                 Clock::time_point returned = Clock::time_point::max()) {
    for (auto& [key, lifetime] : lifetimes_) {
      if (key.first == name && lifetime.until == Clock::time_point::max()) lifetime.until = returned;
    }
    lifetimes_[{name, version}].from = called;
  }

  // After each operator step the load keeps flowing for at least 24 more responses (so every
  // state of the fleet serves some, on a fast or a slow machine).
  void Step(const std::string& what, const absl::Status& status) {
    ASSERT_TRUE(status.ok()) << what << ": " << status;
    const size_t target = finished_.load() + 24;
    const auto give_up = Clock::now() + std::chrono::seconds(10);
    while (finished_.load() < target && Clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  absl::Status CreateBlend(const std::string& name, double lambda) {
    const auto before = Clock::now();
    auto created = cluster_->CreateBlend(TwoParentRecipe(name, "prose", "code", lambda));
    if (!created.ok()) return created.status();
    Committed(name, created->version(), before, Clock::now());
    for (size_t prompt = 0; prompt < kPrompts.size(); ++prompt) {
      references_[{name, created->version()}].push_back(Reference({name, created->version()}, prompt));
    }
    return absl::OkStatus();
  }

  absl::Status Split(std::map<std::string, double> weights) {
    v1::TrafficSplit split;
    for (const auto& [name, weight] : weights) (*split.mutable_weights())[name] = weight;
    v1::TrafficSplit answer;
    auto context = cluster_->AdminContext();
    return ToStatus(cluster_->router_admin().SetTrafficSplit(context.get(), split, &answer));
  }

  absl::Status SetDefault(const std::string& name) {
    v1::SetDefaultRequest request;
    request.set_name(name);
    v1::FleetWeightSets answer;
    auto context = cluster_->AdminContext();
    return ToStatus(cluster_->router_admin().SetDefault(context.get(), request, &answer));
  }

  absl::Status Drop(const std::string& name) {
    v1::DropBlendRequest request;
    request.set_name(name);
    v1::FleetWeightSets answer;
    auto context = cluster_->AdminContext();
    const grpc::Status status = cluster_->router_admin().DropBlend(context.get(), request, &answer);
    const auto at = Clock::now();
    if (status.ok()) {
      for (auto& [key, lifetime] : lifetimes_) {
        if (key.first == name && lifetime.until == Clock::time_point::max()) lifetime.until = at;
      }
    }
    return ToStatus(status);
  }

  std::unique_ptr<BlendCluster> cluster_;
  std::atomic<size_t> finished_{0};    // responses so far
  std::map<Key, Lifetime> lifetimes_;  // main thread only
  std::map<Key, std::vector<std::vector<int32_t>>> references_;
};

TEST_F(SwapTest, NoFailedOrMixedResponsesWhileBlendsChange) {
  for (size_t prompt = 0; prompt < kPrompts.size(); ++prompt) references_[{"prose", 1}].push_back(Reference({"prose", 1}, prompt));

  std::atomic<bool> stop{false};
  std::mutex responses_mutex;
  std::vector<Response> responses;
  std::vector<std::thread> clients;
  for (int client = 0; client < 4; ++client) {
    clients.emplace_back([&, client] {
      RouterClient router(cluster_->router().address());
      std::mt19937 random(client);
      for (size_t i = 0; !stop; ++i) {
        Response response;
        response.prompt = (i + client) % kPrompts.size();
        v1::GenerateRequest request = IdsRequest(kPrompts[response.prompt], kMaxTokens);
        request.set_ab_key(absl::StrCat("user-", random() % 64));
        response.start = Clock::now();
        response.output = router.Generate(request);
        response.end = Clock::now();
        std::lock_guard<std::mutex> lock(responses_mutex);
        responses.push_back(std::move(response));
        ++finished_;
      }
    });
  }

  // The operator's session, with load flowing between the steps.
  Step("start", absl::OkStatus());
  const auto code_called = Clock::now();
  Step("load code", cluster_->LoadParent("code", SourcePath("models/code")).status());
  Committed("code", 1, code_called);
  for (size_t prompt = 0; prompt < kPrompts.size(); ++prompt) references_[{"code", 1}].push_back(Reference({"code", 1}, prompt));
  Step("create mix v1", CreateBlend("mix", 0.5));
  Step("split prose/mix", Split({{"prose", 1.0}, {"mix", 1.0}}));
  Step("create mix v2", CreateBlend("mix", 0.8));
  Step("default mix", SetDefault("mix"));
  Step("create tmp", CreateBlend("tmp", 0.2));
  Step("split mix/tmp/code", Split({{"mix", 1.0}, {"tmp", 1.0}, {"code", 1.0}}));
  Step("split mix/code", Split({{"mix", 1.0}, {"code", 1.0}}));
  Step("drop tmp", Drop("tmp"));
  Step("create mix v3", CreateBlend("mix", 0.3));
  Step("clear split", Split({}));
  stop = true;
  for (auto& client : clients) client.join();

  // Every response: OK, a committed (blend, version) current during its life, its exact tokens.
  ASSERT_GE(responses.size(), 12 * 24u) << "the load was not sustained";
  std::map<Key, int> served;
  int failures = 0;
  for (const Response& response : responses) {
    const RouterOutput& output = response.output;
    if (!output.status.ok()) {
      ++failures;
      ADD_FAILURE() << "request failed: " << output.status.error_message();
      continue;
    }
    const Key key{output.usage.blend(), output.usage.blend_version()};
    ++served[key];
    auto lifetime = lifetimes_.find(key);
    ASSERT_NE(lifetime, lifetimes_.end()) << "unexpected " << key.first << " v" << key.second;
    EXPECT_LE(lifetime->second.from, response.end) << key.first << " v" << key.second << " served before its commit";
    EXPECT_GE(lifetime->second.until, response.start) << key.first << " v" << key.second << " served after it was replaced";
    EXPECT_EQ(output.ids, references_.at(key)[response.prompt])
        << key.first << " v" << key.second << " prompt " << response.prompt << ": tokens of a mixed or wrong version";
  }
  EXPECT_EQ(failures, 0);
  for (const Key& key : std::vector<Key>{{"prose", 1}, {"mix", 1}, {"mix", 2}, {"tmp", 1}, {"code", 1}, {"mix", 3}}) {
    EXPECT_GT(served[key], 0) << key.first << " v" << key.second << " served no request";
  }
  std::string summary;
  for (const auto& [key, count] : served) absl::StrAppend(&summary, key.first, " v", key.second, ": ", count, "  ");
  std::fprintf(stderr, "%zu responses: %s\n", responses.size(), summary.c_str());

  // Superseded and dropped versions leave the shards once their requests are done.
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  std::set<Key> resident;
  do {
    resident.clear();
    auto fleet = cluster_->List();
    ASSERT_TRUE(fleet.ok()) << fleet.status();
    for (const auto& shard : fleet->shards()) {
      for (const auto& status : shard.weight_sets()) resident.insert({status.name(), status.version()});
    }
    if (resident == std::set<Key>{{"prose", 1}, {"code", 1}, {"mix", 3}}) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (Clock::now() < give_up);
  EXPECT_EQ(resident, (std::set<Key>{{"prose", 1}, {"code", 1}, {"mix", 3}}));
}

}  // namespace
}  // namespace expertmesh::testing
