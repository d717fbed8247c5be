// TrafficSplit and BlendCatalog: weights respected statistically, stickiness per ab_key (also
// across catalog instances: router replicas agree), minimal movement when a weight changes,
// validation; the catalog's choices, pins and retirement of old versions.
#include <cmath>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "router-svc/blend_catalog.h"
#include "router-svc/traffic_split.h"

namespace expertmesh::router_service {
namespace {

TEST(TrafficSplitTest, KeyedPicksFollowTheWeightsAndStick) {
  auto split = TrafficSplit::Create({{"prose", 1.0}, {"mix", 3.0}, {"code", 0.0}});
  ASSERT_TRUE(split.ok()) << split.status();
  std::mt19937_64 random(1);
  constexpr int kKeys = 20000;
  std::map<std::string, int> counts;
  for (int key = 0; key < kKeys; ++key) {
    const std::string ab_key = "user-" + std::to_string(key);
    const std::string first = split->Pick(ab_key, random);
    ++counts[first];
    EXPECT_EQ(split->Pick(ab_key, random), first) << "sticky per key";
  }
  // Binomial standard deviation at n = 20000, p = 0.75 is 0.003: 0.02 is > 6 sigma.
  EXPECT_NEAR(counts["mix"] / static_cast<double>(kKeys), 0.75, 0.02);
  EXPECT_NEAR(counts["prose"] / static_cast<double>(kKeys), 0.25, 0.02);
  EXPECT_EQ(counts.count("code"), 0u) << "weight 0 never wins";
}

TEST(TrafficSplitTest, UnkeyedDrawsFollowTheWeights) {
  auto split = TrafficSplit::Create({{"a", 2.0}, {"b", 1.0}, {"c", 1.0}});
  ASSERT_TRUE(split.ok());
  std::mt19937_64 random(7);
  std::map<std::string, int> counts;
  for (int i = 0; i < 20000; ++i) ++counts[split->Pick("", random)];
  EXPECT_NEAR(counts["a"] / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(counts["b"] / 20000.0, 0.25, 0.02);
  EXPECT_NEAR(counts["c"] / 20000.0, 0.25, 0.02);
}

TEST(TrafficSplitTest, RaisingOneWeightOnlyMovesKeysToThatName) {
  auto before = TrafficSplit::Create({{"a", 1.0}, {"b", 1.0}});
  auto after = TrafficSplit::Create({{"a", 1.0}, {"b", 3.0}});
  std::mt19937_64 random(1);
  int moved = 0;
  for (int key = 0; key < 5000; ++key) {
    const std::string ab_key = std::to_string(key);
    const std::string old_pick = before->Pick(ab_key, random);
    const std::string new_pick = after->Pick(ab_key, random);
    if (old_pick != new_pick) {
      ++moved;
      EXPECT_EQ(new_pick, "b") << "a key only moves to the name that gained weight";
    }
  }
  EXPECT_NEAR(moved / 5000.0, 0.25, 0.03) << "from 50% to 75% b: a quarter of the keys move";
}

TEST(TrafficSplitTest, RejectsBadWeights) {
  EXPECT_EQ(TrafficSplit::Create({{"a", -1.0}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrafficSplit::Create({{"a", std::nan("")}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrafficSplit::Create({{"a", INFINITY}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrafficSplit::Create({{"a", 0.0}, {"b", 0.0}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrafficSplit::Create({{"", 1.0}}).status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = TrafficSplit::Create({});
  ASSERT_TRUE(empty.ok());
  std::mt19937_64 random(1);
  EXPECT_EQ(empty->Pick("key", random), "");
}

TEST(BlendCatalogTest, PassesThroughUntilItKnowsTheFleet) {
  BlendCatalog catalog;
  auto choice = catalog.Select("anything", "");
  ASSERT_TRUE(choice.ok());
  EXPECT_EQ(choice->blend, "anything");
  EXPECT_EQ(choice->version, 0u);
}

TEST(BlendCatalogTest, ChoosesExplicitSplitOrDefaultAndPinsVersions) {
  std::vector<std::pair<std::string, uint64_t>> retired;
  BlendCatalog catalog([&](const std::string& name, uint64_t version) { retired.emplace_back(name, version); }, 3);
  catalog.Reset({{"prose", 1, v1::WEIGHT_SET_KIND_PARENT}, {"mix", 2, v1::WEIGHT_SET_KIND_BLEND}}, "prose");
  EXPECT_EQ(catalog.Select("", "")->blend, "prose");
  EXPECT_EQ(catalog.Select("mix", "")->version, 2u);
  EXPECT_EQ(catalog.Select("nope", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(catalog.SetSplit({{"nope", 1.0}}).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(catalog.SetSplit({{"mix", 1.0}}).ok());
  EXPECT_EQ(catalog.Select("", "k")->blend, "mix");
  EXPECT_EQ(catalog.Select("prose", "k")->blend, "prose") << "an explicit blend bypasses the split";

  // Two router replicas (two catalogs) agree on a key's blend.
  BlendCatalog other(nullptr, 99);
  other.Reset({{"prose", 1, v1::WEIGHT_SET_KIND_PARENT}, {"mix", 2, v1::WEIGHT_SET_KIND_BLEND}}, "prose");
  ASSERT_TRUE(catalog.SetSplit({{"mix", 1.0}, {"prose", 1.0}}).ok());
  ASSERT_TRUE(other.SetSplit({{"mix", 1.0}, {"prose", 1.0}}).ok());
  for (int key = 0; key < 50; ++key) {
    EXPECT_EQ(catalog.Select("", std::to_string(key))->blend, other.Select("", std::to_string(key))->blend);
  }

  // A running request keeps mix v2 after v3 is committed; v2 retires when it ends.
  auto running = catalog.Select("mix", "");
  ASSERT_TRUE(running.ok());
  catalog.Commit({"mix", 3, v1::WEIGHT_SET_KIND_BLEND});
  EXPECT_EQ(catalog.Select("mix", "")->version, 3u);
  EXPECT_TRUE(retired.empty()) << "v2 is still in use";
  EXPECT_EQ(catalog.Snapshot().names[0].retiring_versions, std::vector<uint64_t>{2});
  running = absl::NotFoundError("done");  // the request ends: its pin is released
  ASSERT_EQ(retired.size(), 1u);
  EXPECT_EQ(retired[0], std::make_pair(std::string("mix"), uint64_t{2}));

  // Remove: not the default, not in the split.
  EXPECT_EQ(catalog.Remove("prose").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(catalog.Remove("mix").code(), absl::StatusCode::kFailedPrecondition) << "in the split";
  ASSERT_TRUE(catalog.SetSplit({}).ok());
  ASSERT_TRUE(catalog.Remove("mix").ok());
  EXPECT_EQ(retired.back(), std::make_pair(std::string("mix"), uint64_t{3})) << "no pins: retired at once";
  EXPECT_EQ(catalog.Select("mix", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(catalog.Snapshot().split_generation, 3u);

  // A periodic resync while the shards still hold mix v3 (its drop is in progress) keeps it
  // removed, and picks up a blend another router replica committed.
  const size_t retired_before = retired.size();
  catalog.Reset({{"prose", 1, v1::WEIGHT_SET_KIND_PARENT},
                 {"mix", 3, v1::WEIGHT_SET_KIND_BLEND},
                 {"other", 4, v1::WEIGHT_SET_KIND_BLEND}},
                "prose", /*retire_old=*/false);
  EXPECT_EQ(catalog.Select("mix", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(catalog.Select("other", "")->version, 4u);
  catalog.Reset({{"prose", 1, v1::WEIGHT_SET_KIND_PARENT}}, "prose", /*retire_old=*/false);
  EXPECT_EQ(retired.size(), retired_before) << "a resync never drops";
  EXPECT_EQ(catalog.Select("other", "").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace expertmesh::router_service
