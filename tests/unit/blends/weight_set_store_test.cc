// WeightSetStore on real small checkpoints: parents load only the shard's experts; a live blend
// equals the offline expertmesh-merge output tensor for tensor; blends share the base parent's
// storage where values are the base's (and the memory figures say so); the budget; two-phase
// commit, versions and pinning; drops wait for in-flight requests; builds can be cancelled and
// show progress; malformed recipes are INVALID_ARGUMENT and change nothing.
#include "expert-svc/weight_set_store.h"

#include <cstring>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "engine/format/checkpoint.h"
#include "engine/merge/checkpoint_merge.h"
#include "tests/unit/blends/blends_test_util.h"

namespace expertmesh::expert_service {
namespace {

using testing::kTinyShardBytes;
using testing::TempDir;
using testing::TinyStore;
using testing::WriteTinyParent;

class WeightSetStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = WriteTinyParent(dir_.path(), "a", 1);
    b_ = WriteTinyParent(dir_.path(), "b", 2);
  }

  Recipe BlendRecipe(const std::string& name, double lambda_a, double delta = 0.0) const {
    Recipe recipe;
    recipe.name = name;
    recipe.parents = {{"a", "", lambda_a}, {"b", "", 1.0 - lambda_a}};
    recipe.base_parent = "a";
    recipe.delta = delta;
    return recipe;
  }

  // A store with parents a (default) and b loaded.
  std::unique_ptr<WeightSetStore> StoreWithParents(uint64_t budget = 0) {
    auto store = TinyStore(budget);
    EXPECT_TRUE(store->LoadParent("a", a_, 0, true).ok());
    EXPECT_TRUE(store->LoadParent("b", b_, 0, true).ok());
    return store;
  }

  static std::string Describe(const StoreSnapshot& snapshot) {
    std::string text = snapshot.default_name + " " + std::to_string(snapshot.resident_bytes) + ";";
    for (const auto& s : snapshot.weight_sets) {
      text += s.name + " v" + std::to_string(s.version) + " " + WeightSetStateName(s.state) + " " +
              std::to_string(s.referenced_bytes) + "/" + std::to_string(s.unique_bytes) + ";";
    }
    for (const auto& [name, version] : snapshot.next_versions) text += name + "->" + std::to_string(version) + ";";
    return text;
  }

  TempDir dir_;
  std::filesystem::path a_, b_;
};

TEST_F(WeightSetStoreTest, ParentHoldsOnlyTheShardsExpertsWithTheFilesValues) {
  auto store = TinyStore();
  auto loaded = store->LoadParent("a", a_, 0, true);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->version, 1u);
  EXPECT_EQ(loaded->state, WeightSetState::kReady);
  EXPECT_TRUE(loaded->is_default) << "the first committed set becomes the default";
  EXPECT_EQ(loaded->referenced_bytes, kTinyShardBytes);
  EXPECT_EQ(loaded->unique_bytes, kTinyShardBytes);
  EXPECT_EQ(loaded->progress.tensors_done, 36);
  EXPECT_EQ(loaded->progress.tensors_total, 36);

  auto set = store->Acquire("", 0);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ((*set)->name(), "a");
  auto checkpoint = Checkpoint::Open(a_);
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_FALSE((*set)->matrices().contains(0)) << "layer 0 is dense";
  ASSERT_EQ((*set)->matrices().at(2).size(), 4u) << "experts 0-3 only";
  auto expected = (*checkpoint)->LoadFloat("model.layers.2.mlp.experts.3.down_proj.weight");
  ASSERT_TRUE(expected.ok());
  const Tensor& actual = *(*set)->matrices().at(2).at(3).down_proj;
  ASSERT_EQ(actual.shape(), expected->shape());
  EXPECT_EQ(0, std::memcmp(actual.data(), expected->data(), actual.size() * sizeof(float)));
}

TEST_F(WeightSetStoreTest, LiveBlendEqualsTheOfflineMergeBitForBit) {
  Recipe recipe = BlendRecipe("mix", 0.3);
  recipe.parents[0].checkpoint = a_;
  recipe.parents[1].checkpoint = b_;
  const std::filesystem::path offline = dir_.path() / "offline";
  ASSERT_TRUE(MergeCheckpoint(recipe, offline).ok());

  auto store = StoreWithParents();
  auto blend = store->PrepareBlend(BlendRecipe("mix", 0.3), 0, true);
  ASSERT_TRUE(blend.ok()) << blend.status();
  EXPECT_EQ(blend->progress.merged, 36);
  ASSERT_TRUE(store->LoadParent("offline", offline, 0, true).ok());
  auto live = store->Acquire("mix", 0);
  auto merged = store->Acquire("offline", 0);
  ASSERT_TRUE(live.ok() && merged.ok());
  int compared = 0;
  for (const auto& [layer, experts] : (*live)->matrices()) {
    for (const auto& [expert, m] : experts) {
      const ExpertMatrices& o = (*merged)->matrices().at(layer).at(expert);
      for (auto [x, y] : {std::pair{m.gate_proj, o.gate_proj}, {m.up_proj, o.up_proj}, {m.down_proj, o.down_proj}}) {
        ASSERT_EQ(x->shape(), y->shape());
        EXPECT_EQ(0, std::memcmp(x->data(), y->data(), x->size() * sizeof(float))) << layer << "/" << expert;
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 36);
}

TEST_F(WeightSetStoreTest, BlendSharesTheBaseWhereValuesAreTheBases) {
  auto store = StoreWithParents();
  const uint64_t before = store->List().resident_bytes;
  EXPECT_EQ(before, 2 * kTinyShardBytes);

  // delta above every distance: every tensor is kept from the base, nothing new is allocated.
  auto kept = store->PrepareBlend(BlendRecipe("kept", 0.5, /*delta=*/100.0), 0, true);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->progress.shared_with_base, 36);
  EXPECT_EQ(kept->referenced_bytes, kTinyShardBytes);
  EXPECT_EQ(kept->unique_bytes, 0u);
  EXPECT_EQ(kept->shared_bytes, kTinyShardBytes);
  EXPECT_EQ(store->List().resident_bytes, before);
  auto base = store->Acquire("a", 0);
  auto blend = store->Acquire("kept", 0);
  EXPECT_EQ((*blend)->matrices().at(1).at(0).gate_proj.get(), (*base)->matrices().at(1).at(0).gate_proj.get());

  // Only layer 1 merged: its 12 matrices are new, the other 24 point at the base's.
  Recipe partial = BlendRecipe("layer1", 0.5);
  partial.merge_globs = {"model.layers.1.mlp.experts.*"};
  auto layer1 = store->PrepareBlend(partial, 0, true);
  ASSERT_TRUE(layer1.ok()) << layer1.status();
  EXPECT_EQ(layer1->progress.merged, 12);
  EXPECT_EQ(layer1->progress.shared_with_base, 24);
  EXPECT_EQ(layer1->unique_bytes, kTinyShardBytes / 3);
  EXPECT_EQ(store->List().resident_bytes, before + kTinyShardBytes / 3);
  // The base parent shares all its storage (with kept, and layers 2-3 with layer1): dropping it
  // would free nothing.
  for (const auto& status : store->List().weight_sets) {
    if (status.name == "a") {
      EXPECT_EQ(status.unique_bytes, 0u);
      EXPECT_EQ(status.shared_bytes, kTinyShardBytes);
    }
  }
}

TEST_F(WeightSetStoreTest, BudgetRefusesWhatWouldNotFitAndChangesNothing) {
  auto store = StoreWithParents(/*budget=*/2 * kTinyShardBytes + kTinyShardBytes / 2);
  const std::string before = Describe(store->List());
  auto third = store->LoadParent("c", a_, 0, true);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
  EXPECT_NE(third.status().message().find("--weight-budget-mb"), std::string::npos);
  auto full_blend = store->PrepareBlend(BlendRecipe("mix", 0.5), 0, true);
  EXPECT_EQ(full_blend.status().code(), absl::StatusCode::kResourceExhausted) << full_blend.status();
  EXPECT_EQ(Describe(store->List()), before);
  // A blend that shares everything costs nothing and fits.
  EXPECT_TRUE(store->PrepareBlend(BlendRecipe("kept", 0.5, 100.0), 0, true).ok());
  // Dropping a parent frees room for a blend.
  ASSERT_TRUE(store->Drop("b", 0, std::chrono::steady_clock::now() + std::chrono::seconds(5)).ok());
  EXPECT_TRUE(store->LoadParent("b", b_, 0, true).ok()) << "b's room is free again";
}

TEST_F(WeightSetStoreTest, TwoPhaseCommitVersionsAndPinning) {
  auto store = StoreWithParents();
  auto v1 = store->PrepareBlend(BlendRecipe("mix", 0.5), 0, /*commit=*/false);
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->state, WeightSetState::kPrepared);
  EXPECT_EQ(store->Acquire("mix", 0).status().code(), absl::StatusCode::kFailedPrecondition) << "not committed";
  EXPECT_EQ(store->Acquire("mix", 1).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store->Commit("mix", 1).ok());
  auto pinned_v1 = store->Acquire("mix", 0);
  ASSERT_TRUE(pinned_v1.ok());
  EXPECT_EQ((*pinned_v1)->version(), 1u);

  // v2 with other lambdas; v1 retires but still serves requests that pinned it.
  EXPECT_EQ(store->List().next_versions.at("mix"), 2u);
  auto low = store->PrepareBlend(BlendRecipe("mix", 0.9), 1, true);
  EXPECT_EQ(low.status().code(), absl::StatusCode::kFailedPrecondition) << "version 1 is used";
  auto v2 = store->PrepareBlend(BlendRecipe("mix", 0.9), 5, true);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->version, 5u);
  EXPECT_EQ((*store->Acquire("mix", 0))->version(), 5u);
  EXPECT_EQ((*store->Acquire("mix", 1))->version(), 1u) << "a pinned version stays servable";
  auto missing = store->Acquire("mix", 3);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.status().message().find("the request pinned version 3"), std::string::npos);
  EXPECT_EQ(store->Acquire("nope", 0).status().code(), absl::StatusCode::kNotFound);
  for (const auto& status : store->List().weight_sets) {
    if (status.name == "mix" && status.version == 1) {
      EXPECT_EQ(status.state, WeightSetState::kRetired);
    }
  }

  // Abort discards a prepared set; aborting again (or something absent) is fine.
  ASSERT_TRUE(store->PrepareBlend(BlendRecipe("other", 0.2), 0, false).ok());
  auto aborted = store->Abort("other", 1);
  ASSERT_TRUE(aborted.ok());
  EXPECT_TRUE(aborted->has_value());
  EXPECT_FALSE(store->Abort("other", 1)->has_value());
  EXPECT_EQ(store->Acquire("other", 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Commit("other", 1).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(WeightSetStoreTest, DropWaitsForInFlightRequests) {
  auto store = StoreWithParents();
  ASSERT_TRUE(store->PrepareBlend(BlendRecipe("mix", 0.5), 0, true).ok());
  EXPECT_EQ(store->Drop("a", 0).status().code(), absl::StatusCode::kFailedPrecondition) << "the default";
  auto request = store->Acquire("mix", 1);  // a request computing on mix
  ASSERT_TRUE(request.ok());
  auto dropped = store->Drop("mix", 0, std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
  EXPECT_EQ(dropped.status().code(), absl::StatusCode::kDeadlineExceeded) << dropped.status();
  StoreSnapshot during = store->List();
  bool draining = false;
  for (const auto& status : during.weight_sets) {
    if (status.name == "mix") {
      draining = status.state == WeightSetState::kDraining;
      EXPECT_EQ(status.requests_in_flight, 1);
    }
  }
  EXPECT_TRUE(draining);
  EXPECT_TRUE(store->Acquire("mix", 1).ok()) << "a pinned request may continue while draining";
  EXPECT_EQ(store->Acquire("mix", 0).status().code(), absl::StatusCode::kFailedPrecondition) << "no ready version";
  EXPECT_EQ((*request)->name(), "mix");
  { WeightSet::UseGuard done = *std::move(request); }
  (void)store->Drop("mix", 0, std::chrono::steady_clock::now() + std::chrono::seconds(5));  // freed or waits until
  // Freed by now (or while waiting): nothing named mix is left.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (store->Acquire("mix", 1).ok() && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(store->Acquire("mix", 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->List().resident_bytes, 2 * kTinyShardBytes);
}

// A backend whose Build blocks until released: the set stays "loading" meanwhile.
class GatedBackend : public ExpertBackend {
 public:
  std::string name() const override { return "gated"; }
  absl::StatusOr<std::unique_ptr<RoutedExperts>> Build(const ExpertMatrixMap& matrices, int64_t hidden,
                                                       int64_t intermediate) override {
    entered.set_value();
    release.get_future().wait();
    return MakeCpuExpertBackend()->Build(matrices, hidden, intermediate);
  }
  std::promise<void> entered;
  std::promise<void> release;
};

TEST_F(WeightSetStoreTest, BuildsShowProgressAndCanBeCancelled) {
  // A stop requested before the build: CANCELLED, nothing left behind.
  auto store = TinyStore();
  std::stop_source stop;
  stop.request_stop();
  auto cancelled = store->LoadParent("a", a_, 0, true, stop.get_token());
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled) << cancelled.status();
  EXPECT_TRUE(store->List().weight_sets.empty());
  EXPECT_TRUE(store->List().next_versions.empty()) << "a failed build uses no version";

  // Abort while the build runs: List shows it loading with its progress, then it is gone.
  auto gated_backend = std::make_unique<GatedBackend>();
  GatedBackend* gate = gated_backend.get();
  auto gated = TinyStore(0, std::move(gated_backend));
  auto load = std::async(std::launch::async, [&] { return gated->LoadParent("a", a_, 0, true); });
  gate->entered.get_future().wait();
  StoreSnapshot during = gated->List();
  ASSERT_EQ(during.weight_sets.size(), 1u);
  EXPECT_EQ(during.weight_sets[0].state, WeightSetState::kLoading);
  EXPECT_EQ(during.weight_sets[0].progress.tensors_done, 36);
  EXPECT_EQ(during.weight_sets[0].progress.ToString(), "loading: 36/36 tensors (0.4/0.4 MB)");
  auto aborted = gated->Abort("a", 1);
  ASSERT_TRUE(aborted.ok());
  gate->release.set_value();
  EXPECT_EQ(load.get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(gated->List().weight_sets.empty());

  // With a deadline, Abort returns only once the cancelled build has removed its entry (what the
  // router's fleet-wide abort relies on to report "nothing changed").
  auto waited_backend = std::make_unique<GatedBackend>();
  GatedBackend* waited_gate = waited_backend.get();
  auto waited = TinyStore(0, std::move(waited_backend));
  auto waited_load = std::async(std::launch::async, [&] { return waited->LoadParent("a", a_, 0, true); });
  waited_gate->entered.get_future().wait();
  auto too_soon = waited->Abort("a", 1, std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
  EXPECT_EQ(too_soon.status().code(), absl::StatusCode::kDeadlineExceeded) << too_soon.status();
  auto release = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    waited_gate->release.set_value();
  });
  auto stopped = waited->Abort("a", 1, std::chrono::steady_clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_TRUE(waited->List().weight_sets.empty()) << "nothing is left once Abort returns";
  EXPECT_TRUE(waited->List().next_versions.empty());
  release.get();
  EXPECT_EQ(waited_load.get().status().code(), absl::StatusCode::kCancelled);
}

TEST_F(WeightSetStoreTest, MalformedRecipesAreInvalidAndChangeNothing) {
  auto store = StoreWithParents();
  // A parent with another expert shape (moe_intermediate_size 48) and one with another config.
  std::string narrow_config = testing::TinyConfigJson(testing::kTinyHidden);
  narrow_config.replace(narrow_config.find("\"moe_intermediate_size\": 96"), 27, "\"moe_intermediate_size\": 48");
  const auto narrow = dir_.path() / "narrow";
  testing::WriteCheckpoint(narrow, testing::TinyExpertTensors(3, 0.05f, 48), narrow_config);
  std::string other_eps = testing::TinyConfigJson(testing::kTinyHidden);
  other_eps.replace(other_eps.find("\"rms_norm_eps\": 1e-06"), 21, "\"rms_norm_eps\": 1e-05");
  const auto eps = WriteTinyParent(dir_.path(), "eps", 4, other_eps);
  ASSERT_TRUE(store->LoadParent("eps", eps, 0, true).ok()) << "same expert shapes: loadable";
  const std::string before = Describe(store->List());

  auto expect_invalid = [&](const absl::StatusOr<WeightSetStatus>& result, const std::string& part) {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    EXPECT_NE(result.status().message().find(part), std::string::npos) << result.status();
    EXPECT_EQ(Describe(store->List()), before);
  };
  expect_invalid(store->LoadParent("narrow", narrow, 0, true), "moe_intermediate_size = 48");
  Recipe unknown = BlendRecipe("mix", 0.5);
  unknown.parents[1].name = "zzz";
  expect_invalid(store->PrepareBlend(unknown, 0, true), "unknown parent 'zzz'");
  expect_invalid(store->PrepareBlend(BlendRecipe("mix", 0.5, -0.1), 0, true), "delta");
  Recipe mismatch = BlendRecipe("mix", 0.5);
  mismatch.parents[1].name = "eps";
  expect_invalid(store->PrepareBlend(mismatch, 0, true), "rms_norm_eps");
  Recipe wrong_path = BlendRecipe("mix", 0.5);
  wrong_path.parents[1].checkpoint = a_;
  expect_invalid(store->PrepareBlend(wrong_path, 0, true), "was loaded from");
  Recipe self = BlendRecipe("a", 0.5);
  expect_invalid(store->PrepareBlend(self, 0, true), "is a parent");
  Recipe bad_name = BlendRecipe("mix/1", 0.5);
  expect_invalid(store->PrepareBlend(bad_name, 0, true), "may only contain");
  auto lambdas = store->ParseRecipeText(
      R"({"name": "mix", "parents": {"a": "x", "b": "y"}, "lambdas": [0.5], "base": "a"})");
  EXPECT_EQ(lambdas.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(lambdas.status().message().find("1 values for 2 parents"), std::string::npos) << lambdas.status();
  EXPECT_EQ(store->ReadRecipeFile("x.json").status().code(), absl::StatusCode::kFailedPrecondition)
      << "no --recipes-dir";
  EXPECT_EQ(Describe(store->List()), before);
}

}  // namespace
}  // namespace expertmesh::expert_service
