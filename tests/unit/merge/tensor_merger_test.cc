// TensorMerger on small real checkpoints: blend values against hand-computed numbers, the delta
// rule on both sides of the threshold, FP8 parents dequantized before merging, glob selection,
// validation of the recipe against the parents, cancellation and the live-blend subset API.
#include "engine/merge/tensor_merger.h"

#include <cmath>
#include <stop_token>

#include "engine/format/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/unit/merge/merge_test_util.h"

namespace expertmesh {
namespace {

using testing::EncodeValues;
using testing::TempDir;
using testing::TestTensor;
using testing::TinyConfigJson;
using testing::WriteCheckpoint;

const std::string kExpert0 = "model.layers.1.mlp.experts.0.up_proj.weight";
const std::string kExpert1 = "model.layers.1.mlp.experts.1.up_proj.weight";
const std::string kAttention = "model.layers.1.self_attn.o_proj.weight";
const std::string kBias = "model.layers.1.mlp.gate.e_score_correction_bias";

std::vector<TestTensor> ParentA() {
  return {{kExpert0, DType::kBF16, {2, 2}, {1, 2, 3, 4}},
          {kExpert1, DType::kBF16, {2, 2}, {1, 1, 1, 1}},
          {kAttention, DType::kBF16, {2, 2}, {5, 6, 7, 8}},
          {kBias, DType::kF32, {2}, {0.1f, 0.2f}}};
}

// Expert 0 far from A (relative distance sqrt(0.8)), expert 1 close (0.0078125 / 2 = 0.00390625).
std::vector<TestTensor> ParentB() {
  return {{kExpert0, DType::kBF16, {2, 2}, {3, 2, 1, 8}},
          {kExpert1, DType::kBF16, {2, 2}, {1, 1, 1, 1.0078125f}},
          {kAttention, DType::kBF16, {2, 2}, {-1, -2, -3, -4}},
          {kBias, DType::kF32, {2}, {0.3f, 0.4f}}};
}

std::vector<float> Values(const MergedTensor& tensor) {
  auto values = tensor.ToFloat();
  EXPECT_TRUE(values.ok()) << values.status();
  return values.ok() ? std::vector<float>(values->values().begin(), values->values().end()) : std::vector<float>{};
}

class TensorMergerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteCheckpoint(dir_.path() / "a", ParentA());
    WriteCheckpoint(dir_.path() / "b", ParentB());
  }

  const Checkpoint& Open(const std::string& name) {
    auto checkpoint = Checkpoint::Open(dir_.path() / name);
    EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
    opened_.push_back(std::move(checkpoint).value());
    return *opened_.back();
  }

  Recipe TwoParents(double lambda_a, double lambda_b, const std::string& base = "a", double delta = 0.0) {
    Recipe recipe;
    recipe.name = "test";
    recipe.parents = {{"a", dir_.path() / "a", lambda_a}, {"b", dir_.path() / "b", lambda_b}};
    recipe.base_parent = base;
    recipe.delta = delta;
    return recipe;
  }

  absl::StatusOr<std::unique_ptr<TensorMerger>> Create(const Recipe& recipe, TensorMergerOptions options = {}) {
    std::vector<const Checkpoint*> parents;
    for (const RecipeParent& parent : recipe.parents) parents.push_back(&Open(parent.checkpoint.filename().string()));
    return TensorMerger::Create(recipe, parents, options);
  }

  std::vector<std::byte> RawOf(const std::string& parent, const std::string& tensor) {
    auto raw = Open(parent).RawBytes(tensor);
    EXPECT_TRUE(raw.ok()) << raw.status();
    return raw.ok() ? std::vector<std::byte>(raw->begin(), raw->end()) : std::vector<std::byte>{};
  }

  TempDir dir_;
  std::vector<std::unique_ptr<Checkpoint>> opened_;
};

TEST_F(TensorMergerTest, BlendsRoutedExpertsWithHandComputedValues) {
  auto merger = Create(TwoParents(0.25, 0.75));
  ASSERT_TRUE(merger.ok()) << merger.status();

  auto expert0 = (*merger)->Merge(kExpert0);
  ASSERT_TRUE(expert0.ok()) << expert0.status();
  EXPECT_EQ(expert0->origin, TensorOrigin::kMerged);
  EXPECT_FALSE(expert0->kept_from_base());
  EXPECT_EQ(expert0->dtype, DType::kBF16);
  EXPECT_EQ(expert0->shape, (std::vector<int64_t>{2, 2}));
  // 0.25 * [1, 2, 3, 4] + 0.75 * [3, 2, 1, 8]
  EXPECT_EQ(Values(*expert0), (std::vector<float>{2.5f, 2.0f, 1.5f, 7.0f}));
  // ||[2, 0, -2, 4]|| / ||[1, 2, 3, 4]|| = sqrt(24 / 30)
  EXPECT_NEAR(expert0->relative_distance, std::sqrt(0.8), 1e-12);

  // 0.25 + 0.75 * 1.0078125 = 1.005859375 rounds (to nearest bf16) to 1.0078125.
  auto expert1 = (*merger)->Merge(kExpert1);
  ASSERT_TRUE(expert1.ok());
  EXPECT_EQ(expert1->origin, TensorOrigin::kMerged);  // delta 0 merges even near-identical tensors
  EXPECT_EQ(Values(*expert1), (std::vector<float>{1, 1, 1, 1.0078125f}));
  EXPECT_DOUBLE_EQ(expert1->relative_distance, 0.00390625);

  // Not selected by the default glob: the base's stored bytes.
  for (const std::string& name : {kAttention, kBias}) {
    auto copied = (*merger)->Merge(name);
    ASSERT_TRUE(copied.ok());
    EXPECT_EQ(copied->origin, TensorOrigin::kCopiedFromBase);
    EXPECT_TRUE(copied->kept_from_base());
    EXPECT_TRUE(std::isnan(copied->relative_distance));
    EXPECT_EQ(copied->bytes, RawOf("a", name));
  }
  EXPECT_EQ((*merger)->Merge(kBias)->dtype, DType::kF32);
}

TEST_F(TensorMergerTest, LambdasNeedNotSumToOneAndMayExtrapolate) {
  auto merger = Create(TwoParents(1.0, 0.5));
  ASSERT_TRUE(merger.ok());
  EXPECT_EQ(Values(*(*merger)->Merge(kExpert0)), (std::vector<float>{2.5f, 3.0f, 3.5f, 8.0f}));
  auto extrapolated = Create(TwoParents(-1.0, 2.0));
  ASSERT_TRUE(extrapolated.ok());
  EXPECT_EQ(Values(*(*extrapolated)->Merge(kExpert0)), (std::vector<float>{5.0f, 2.0f, -1.0f, 12.0f}));
}

TEST_F(TensorMergerTest, DeltaKeepsTheBaseTensorOnlyBelowTheThreshold) {
  // Expert 1 differs by 0.00390625, expert 0 by 0.894.
  auto below = Create(TwoParents(0.25, 0.75, "a", /*delta=*/0.004));
  ASSERT_TRUE(below.ok());
  auto kept = (*below)->Merge(kExpert1);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->origin, TensorOrigin::kKeptByDelta);
  EXPECT_TRUE(kept->kept_from_base());
  EXPECT_EQ(kept->bytes, RawOf("a", kExpert1));
  EXPECT_DOUBLE_EQ(kept->relative_distance, 0.00390625);
  EXPECT_EQ((*below)->Merge(kExpert0)->origin, TensorOrigin::kMerged);

  auto above = Create(TwoParents(0.25, 0.75, "a", /*delta=*/0.0039));
  ASSERT_TRUE(above.ok());
  EXPECT_EQ((*above)->Merge(kExpert1)->origin, TensorOrigin::kMerged);

  auto large = Create(TwoParents(0.25, 0.75, "a", /*delta=*/0.9));
  ASSERT_TRUE(large.ok());
  EXPECT_EQ((*large)->Merge(kExpert0)->origin, TensorOrigin::kKeptByDelta);
  EXPECT_EQ((*large)->Merge(kExpert0)->bytes, RawOf("a", kExpert0));
  auto just_below = Create(TwoParents(0.25, 0.75, "a", /*delta=*/0.894));
  ASSERT_TRUE(just_below.ok());
  EXPECT_EQ((*just_below)->Merge(kExpert0)->origin, TensorOrigin::kMerged);
}

TEST_F(TensorMergerTest, BaseParentNeedNotComeFirst) {
  auto merger = Create(TwoParents(0.25, 0.75, "b", /*delta=*/0.9));
  ASSERT_TRUE(merger.ok());
  EXPECT_EQ((*merger)->Merge(kAttention)->bytes, RawOf("b", kAttention));
  auto kept = (*merger)->Merge(kExpert0);  // ||A - B|| / ||B|| = sqrt(24 / 78) < 0.9
  EXPECT_EQ(kept->origin, TensorOrigin::kKeptByDelta);
  EXPECT_NEAR(kept->relative_distance, std::sqrt(24.0 / 78.0), 1e-12);
  EXPECT_EQ(kept->bytes, RawOf("b", kExpert0));
}

TEST_F(TensorMergerTest, ThreeParentsUseTheLargestDistanceAndRoundToNearestEven) {
  WriteCheckpoint(dir_.path() / "c", {{kExpert0, DType::kBF16, {2, 2}, {1, 2, 3, 4.0625f}},
                                      {kExpert1, DType::kBF16, {2, 2}, {1, 1, 1, 1}}});
  Recipe recipe = TwoParents(0.5, 0.25);
  recipe.parents.push_back({"c", dir_.path() / "c", 0.25});
  auto merger = Create(recipe);
  ASSERT_TRUE(merger.ok()) << merger.status();
  auto merged = (*merger)->Merge(kExpert0);
  ASSERT_TRUE(merged.ok());
  // 0.5 [1,2,3,4] + 0.25 [3,2,1,8] + 0.25 [1,2,3,4.0625] = [1.5, 2, 2.5, 5.015625]; 5.015625 lies
  // halfway between the bf16 neighbours 5.0 and 5.03125 and rounds to the even one, 5.0.
  EXPECT_EQ(Values(*merged), (std::vector<float>{1.5f, 2.0f, 2.5f, 5.0f}));
  EXPECT_NEAR(merged->relative_distance, std::sqrt(0.8), 1e-12);  // b's, not c's
  // Expert 1: b within 0.0039, c identical -> kept with delta 0.004.
  recipe.delta = 0.004;
  auto with_delta = Create(recipe);
  ASSERT_TRUE(with_delta.ok());
  EXPECT_EQ((*with_delta)->Merge(kExpert1)->origin, TensorOrigin::kKeptByDelta);
}

TEST_F(TensorMergerTest, Float32OutputKeepsTheUnroundedBlend) {
  Recipe recipe = TwoParents(0.1, 0.9);
  recipe.output_dtype = DType::kF32;
  auto merger = Create(recipe);
  ASSERT_TRUE(merger.ok());
  auto merged = (*merger)->Merge(kExpert0);
  ASSERT_TRUE(merged.ok());
  EXPECT_EQ(merged->dtype, DType::kF32);
  EXPECT_EQ(merged->bytes.size(), 16u);
  const float a[] = {1, 2, 3, 4}, b[] = {3, 2, 1, 8};
  const std::vector<float> values = Values(*merged);
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(values[j], 0.1f * a[j] + 0.9f * b[j]) << j;                   // float32 arithmetic
    EXPECT_NEAR(values[j], 0.1 * a[j] + 0.9 * b[j], 1e-6) << j;            // the real-number blend
  }
  EXPECT_NE(values[0], BFloat16ToFloat(FloatToBFloat16(values[0])));  // 2.8 is not a bf16 value
}

TEST_F(TensorMergerTest, GlobsSelectTensorsAndFloat32TensorsStayFloat32) {
  Recipe everything = TwoParents(0.25, 0.75);
  everything.merge_globs = {"*"};
  auto merger = Create(everything);
  ASSERT_TRUE(merger.ok());
  for (const OutputTensorSpec& spec : (*merger)->outputs()) EXPECT_TRUE(spec.selected) << spec.name;
  auto attention = (*merger)->Merge(kAttention);
  EXPECT_EQ(attention->origin, TensorOrigin::kMerged);
  EXPECT_EQ(Values(*attention), (std::vector<float>{0.5f, 0.0f, -0.5f, -1.0f}));
  auto bias = (*merger)->Merge(kBias);
  EXPECT_EQ(bias->dtype, DType::kF32);
  EXPECT_EQ(Values(*bias), (std::vector<float>{0.25f * 0.1f + 0.75f * 0.3f, 0.25f * 0.2f + 0.75f * 0.4f}));

  Recipe listed = TwoParents(0.25, 0.75);
  listed.merge_globs = {"model.layers.?.self_attn.*", "*experts.0*"};
  auto subset = Create(listed);
  ASSERT_TRUE(subset.ok());
  EXPECT_TRUE((*subset)->FindOutput(kAttention)->selected);
  EXPECT_TRUE((*subset)->FindOutput(kExpert0)->selected);
  EXPECT_FALSE((*subset)->FindOutput(kExpert1)->selected);
  EXPECT_FALSE((*subset)->FindOutput(kBias)->selected);
  EXPECT_EQ((*subset)->Merge(kExpert1)->origin, TensorOrigin::kCopiedFromBase);
  EXPECT_EQ((*subset)->FindOutput("nope"), nullptr);
}

TEST_F(TensorMergerTest, GlobMatchingNothingIsInvalidUnlessAllowed) {
  Recipe recipe = TwoParents(0.5, 0.5);
  recipe.merge_globs = {"model.layers.*.mlp.experts.*", "lm_head.weight"};
  auto merger = Create(recipe);
  ASSERT_FALSE(merger.ok());
  EXPECT_EQ(merger.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(merger.status().message().find("'lm_head.weight' matches no tensor"), std::string::npos);
  auto lenient = Create(recipe, TensorMergerOptions{.require_every_glob_to_match = false});
  ASSERT_TRUE(lenient.ok()) << lenient.status();
  EXPECT_EQ((*lenient)->Merge(kExpert0)->origin, TensorOrigin::kMerged);
}

TEST_F(TensorMergerTest, Fp8ParentIsDequantizedBeforeMerging) {
  // FP8 e4m3 values [2, 1, 0.5, 4] with one 2x2 block scale 0.5 -> [1, 0.5, 0.25, 2].
  const std::vector<TestTensor> fp8_tensors = {
      {kExpert0, DType::kF8E4M3, {2, 2}, {2, 1, 0.5f, 4}},
      {kExpert0 + "_scale_inv", DType::kF32, {1, 1}, {0.5f}},
      {kExpert1, DType::kBF16, {2, 2}, {1, 1, 1, 1}},
      {kAttention, DType::kF8E4M3, {2, 2}, {1, 2, 3, 4}},
      {kAttention + "_scale_inv", DType::kF32, {1, 1}, {2.0f}},
      {kBias, DType::kF32, {2}, {0.1f, 0.2f}}};
  WriteCheckpoint(dir_.path() / "f", fp8_tensors, TinyConfigJson(256, /*fp8_block=*/2));

  // bf16 base a, FP8 parent f: configs differ only in quantization, which is allowed.
  Recipe recipe = TwoParents(0.5, 0.5);
  recipe.parents[1] = {"f", dir_.path() / "f", 0.5};
  auto merger = Create(recipe);
  ASSERT_TRUE(merger.ok()) << merger.status();
  auto merged = (*merger)->Merge(kExpert0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  // 0.5 [1, 2, 3, 4] + 0.5 [1, 0.5, 0.25, 2]
  EXPECT_EQ(Values(*merged), (std::vector<float>{1.0f, 1.25f, 1.625f, 3.0f}));
  EXPECT_NEAR(merged->relative_distance, std::sqrt((0 + 2.25 + 7.5625 + 4) / 30.0), 1e-12);

  // FP8 base: the merged expert is stored bf16 and loses its scale; the unselected FP8 attention
  // weight keeps its bytes and its scale.
  Recipe fp8_base = recipe;
  fp8_base.base_parent = "f";
  auto from_fp8 = Create(fp8_base);
  ASSERT_TRUE(from_fp8.ok()) << from_fp8.status();
  EXPECT_EQ((*from_fp8)->FindOutput(kExpert0 + "_scale_inv"), nullptr);
  EXPECT_EQ((*from_fp8)->FindOutput(kExpert0)->dtype, DType::kBF16);
  ASSERT_NE((*from_fp8)->FindOutput(kAttention + "_scale_inv"), nullptr);
  EXPECT_EQ((*from_fp8)->FindOutput(kAttention)->dtype, DType::kF8E4M3);
  EXPECT_EQ(Values(*(*from_fp8)->Merge(kExpert0)), (std::vector<float>{1.0f, 1.25f, 1.625f, 3.0f}));
  EXPECT_EQ((*from_fp8)->Merge(kAttention)->bytes, RawOf("f", kAttention));
  EXPECT_EQ((*from_fp8)->Merge(kAttention + "_scale_inv")->bytes, RawOf("f", kAttention + "_scale_inv"));
  EXPECT_EQ((*from_fp8)->Merge(kAttention)->ToFloat().status().code(), absl::StatusCode::kFailedPrecondition);
  // Kept by delta from an FP8 base: the dequantized base values in the output dtype.
  fp8_base.delta = 10.0;
  auto kept = Create(fp8_base);
  ASSERT_TRUE(kept.ok());
  auto kept_expert = (*kept)->Merge(kExpert0);
  EXPECT_EQ(kept_expert->origin, TensorOrigin::kKeptByDelta);
  EXPECT_EQ(Values(*kept_expert), (std::vector<float>{1.0f, 0.5f, 0.25f, 2.0f}));
}

TEST_F(TensorMergerTest, RejectsParentsThatDoNotFitTheRecipe) {
  WriteCheckpoint(dir_.path() / "wide", ParentB(), TinyConfigJson(/*hidden_size=*/128));
  Recipe recipe = TwoParents(0.5, 0.5);
  recipe.parents[1] = {"wide", dir_.path() / "wide", 0.5};
  auto config = Create(recipe);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("field hidden_size"), std::string::npos) << config.status();

  std::vector<TestTensor> reshaped = ParentB();
  reshaped[0].shape = {4, 1};
  WriteCheckpoint(dir_.path() / "reshaped", reshaped);
  recipe.parents[1] = {"reshaped", dir_.path() / "reshaped", 0.5};
  auto shape = Create(recipe);
  EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(shape.status().message().find("has shape [4, 1]"), std::string::npos) << shape.status();

  std::vector<TestTensor> partial = ParentB();
  partial.erase(partial.begin() + 1);  // no expert 1
  WriteCheckpoint(dir_.path() / "partial", partial);
  recipe.parents[1] = {"partial", dir_.path() / "partial", 0.5};
  auto missing = Create(recipe);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("has no tensor " + kExpert1), std::string::npos) << missing.status();

  // Unselected tensors may differ: only the base supplies them.
  recipe.merge_globs = {"*experts.0*"};
  EXPECT_TRUE(Create(recipe).ok());

  const Recipe two = TwoParents(0.5, 0.5);
  EXPECT_EQ(TensorMerger::Create(two, {&Open("a")}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TensorMerger::Create(two, {&Open("a"), nullptr}).status().code(), absl::StatusCode::kInvalidArgument);
  Recipe bad = two;
  bad.delta = -1;
  EXPECT_EQ(TensorMerger::Create(bad, {&Open("a"), &Open("b")}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TensorMergerTest, NonFiniteParentValuesAndOverflowAreErrors) {
  std::vector<TestTensor> broken = ParentB();
  broken[0].values[2] = std::nanf("");
  WriteCheckpoint(dir_.path() / "nan", broken);
  Recipe recipe = TwoParents(0.5, 0.5);
  recipe.parents[1] = {"nan", dir_.path() / "nan", 0.5};
  auto merger = Create(recipe);
  ASSERT_TRUE(merger.ok());
  EXPECT_EQ((*merger)->Merge(kExpert0).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE((*merger)->Merge(kExpert1).ok());

  auto huge = Create(TwoParents(1e38, 1e38));
  ASSERT_TRUE(huge.ok());
  auto overflow = (*huge)->Merge(kExpert0);
  EXPECT_EQ(overflow.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(overflow.status().message().find("overflows"), std::string::npos);
}

TEST_F(TensorMergerTest, SubsetMergeForLiveBlendsMatchesSingleMergesAndReportsProgress) {
  auto merger = Create(TwoParents(0.25, 0.75, "a", /*delta=*/0.004));
  ASSERT_TRUE(merger.ok());
  const std::vector<std::string> shard = {kExpert0, kExpert1, kAttention};
  std::vector<MergeProgress> seen;
  auto merged = MergeTensors(**merger, shard, [&](const MergeProgress& p) { seen.push_back(p); });
  ASSERT_TRUE(merged.ok()) << merged.status();
  ASSERT_EQ(merged->size(), 3u);
  for (size_t i = 0; i < shard.size(); ++i) {
    EXPECT_EQ((*merged)[i].name, shard[i]);
    EXPECT_EQ((*merged)[i].bytes, (*merger)->Merge(shard[i])->bytes);
  }
  ASSERT_EQ(seen.size(), 4u);  // start + one per tensor
  EXPECT_EQ(seen.back().tensors_done, 3);
  EXPECT_EQ(seen.back().merged, 1);
  EXPECT_EQ(seen.back().kept_by_delta, 1);
  EXPECT_EQ(seen.back().copied, 1);
  EXPECT_EQ(seen.back().bytes_done, 24u);
  EXPECT_EQ(seen.back().bytes_total, 24u);
  EXPECT_NE(seen.back().ToString().find("3/3 tensors"), std::string::npos);

  const std::vector<std::string> unknown = {kExpert0, "model.layers.9.mlp.experts.0.up_proj.weight"};
  EXPECT_EQ(MergeTensors(**merger, unknown).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*merger)->Merge("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(TensorMergerTest, StopTokenCancels) {
  auto merger = Create(TwoParents(0.5, 0.5));
  ASSERT_TRUE(merger.ok());
  std::stop_source stop;
  stop.request_stop();
  EXPECT_EQ((*merger)->Merge(kExpert0, stop.get_token()).status().code(), absl::StatusCode::kCancelled);
  const std::vector<std::string> names = {kExpert0};
  EXPECT_EQ(MergeTensors(**merger, names, nullptr, stop.get_token()).status().code(), absl::StatusCode::kCancelled);
}

TEST(RelativeDistanceTest, MatchesTheDefinition) {
  const std::vector<float> base = {3, 4}, other = {3, 5}, zero = {0, 0};
  EXPECT_DOUBLE_EQ(RelativeDistance(other, base), 0.2);  // ||[0, 1]|| / ||[3, 4]||
  EXPECT_EQ(RelativeDistance(base, base), 0.0);
  EXPECT_EQ(RelativeDistance(zero, zero), 0.0);
  EXPECT_TRUE(std::isinf(RelativeDistance(other, zero)));
}

}  // namespace
}  // namespace expertmesh
