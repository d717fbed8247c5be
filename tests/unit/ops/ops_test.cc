// CPU ops: GEMM layout, RMSNorm, SwiGLU, softmax, top-k, and RoPE/YaRN tables against the
// formulas written out by hand (DeepSeek's yarn_find_correction_range / linear ramp / mscale).
#include <cmath>
#include <numbers>
#include <vector>

#include "engine/ops/compute_backend.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/rope.h"
#include "engine/ops/top_k.h"
#include "gtest/gtest.h"

namespace expertmesh::ops {
namespace {

TEST(MatMulTest, LinearLayout) {
  // x [2,3], W [2,3] -> y[t,o] = sum_i x[t,i] W[o,i]
  std::vector<float> x = {1, 2, 3, 4, 5, 6};
  std::vector<float> w = {1, 0, -1, 0.5f, 0.5f, 0.5f};
  std::vector<float> y(4);
  MatMulTransposed(x, 2, 3, w, 2, y);
  EXPECT_EQ(y, (std::vector<float>{-2, 3, -2, 7.5f}));
  MatMulTransposed(x, 2, 3, w, 2, y, /*accumulate=*/true);
  EXPECT_EQ(y, (std::vector<float>{-4, 6, -4, 15}));
  std::vector<float> b = {1, 2, 3, 4, 5, 6};  // [3,2]
  std::vector<float> z(4);
  MatMul(x, 2, 3, b, 2, z);
  EXPECT_EQ(z, (std::vector<float>{22, 28, 49, 64}));
}

TEST(ElementwiseTest, RmsNormSiluSoftmaxSigmoid) {
  std::vector<float> x = {3, 4}, w = {1, 2}, out(2);
  RmsNorm(x, 1, 2, w, 0.0f, out);
  const float rms = std::sqrt(12.5f);
  EXPECT_NEAR(out[0], 3 / rms, 1e-6);
  EXPECT_NEAR(out[1], 8 / rms, 1e-6);
  CpuBackend backend;
  backend.RmsNorm(x, 1, 2, w, 0.0f, out);
  EXPECT_NEAR(out[1], 8 / rms, 1e-6);

  std::vector<float> gate = {0.0f, 1.0f}, up = {2.0f, 3.0f}, act(2);
  SiluMultiply(gate, up, act);
  EXPECT_NEAR(act[0], 0.0f, 1e-7);
  EXPECT_NEAR(act[1], 3.0f / (1.0f + std::exp(-1.0f)), 1e-6);

  std::vector<float> row = {1000.0f, 1000.0f, -INFINITY};
  SoftmaxInPlace(row);
  EXPECT_FLOAT_EQ(row[0], 0.5f);
  EXPECT_FLOAT_EQ(row[2], 0.0f);
  std::vector<float> s = {0.0f};
  SigmoidInPlace(s);
  EXPECT_FLOAT_EQ(s[0], 0.5f);
}

TEST(TopKTest, OrderAndTies) {
  std::vector<float> v = {0.1f, 0.9f, 0.5f, 0.9f, NAN, 0.2f};
  EXPECT_EQ(TopKIndices(v, 3), (std::vector<int32_t>{1, 3, 2}));
  EXPECT_EQ(TopKIndices(v, 10).size(), 6u);
  EXPECT_EQ(ArgsortDescending(v).back(), 4);  // NaN last
}

// DeepSeek's YaRN written out independently in double precision.
struct HandYarn {
  std::vector<double> inverse_frequencies;
  double mscale;
};
HandYarn ComputeHandYarn(int dim, double base, double factor, double original, double beta_fast, double beta_slow,
                         double mscale, double mscale_all_dim) {
  auto correction_dim = [&](double rotations) {
    return dim * std::log(original / (rotations * 2 * std::numbers::pi)) / (2 * std::log(base));
  };
  double low = std::max(std::floor(correction_dim(beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(beta_slow)), double(dim - 1));
  if (low == high) high += 0.001;
  HandYarn out;
  for (int i = 0; i < dim / 2; ++i) {
    const double freq = 1.0 / std::pow(base, 2.0 * i / dim);
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    const double smooth = 1.0 - ramp;  // 1: keep original frequency
    out.inverse_frequencies.push_back(freq / factor * (1 - smooth) + freq * smooth);
  }
  auto m = [&](double s, double ms) { return s <= 1 ? 1.0 : 0.1 * ms * std::log(s) + 1.0; };
  out.mscale = m(factor, mscale) / m(factor, mscale_all_dim);
  return out;
}

TEST(RopeTest, YarnTablesMatchHandFormula) {
  RopeParameters p;
  p.rotary_dim = 64;
  p.theta = 10000.0;
  p.yarn = YarnParameters{40.0, 4096, 32.0, 1.0, 0.707, 0.707};
  p.table_positions = 300;
  auto rope = RotaryEmbedding::Create(p);
  ASSERT_TRUE(rope.ok()) << rope.status();
  const HandYarn hand = ComputeHandYarn(64, 10000.0, 40.0, 4096, 32, 1, 0.707, 0.707);
  for (int i = 0; i < 32; ++i) {
    EXPECT_NEAR(rope->inverse_frequencies()[i], hand.inverse_frequencies[i], 1e-6 * hand.inverse_frequencies[0]) << i;
  }
  EXPECT_NEAR(rope->attention_factor(), hand.mscale, 1e-6);
  for (int64_t position : {0, 1, 17, 299, 5000}) {  // 5000: beyond the table
    for (int i : {0, 5, 20, 31}) {
      const double angle = position * hand.inverse_frequencies[i];
      EXPECT_NEAR(rope->Cos(position, i), std::cos(angle) * hand.mscale, 2e-3 * (1 + position / 1000.0));
      EXPECT_NEAR(rope->Sin(position, i), std::sin(angle) * hand.mscale, 2e-3 * (1 + position / 1000.0));
    }
  }
  // Near positions the float32 angle is exact to ~1e-6.
  EXPECT_NEAR(rope->Cos(3, 0), std::cos(3.0) * hand.mscale, 1e-6);
}

TEST(RopeTest, AttentionFactorWithoutMscaleAllDim) {
  RopeParameters p;
  p.rotary_dim = 16;
  p.yarn = YarnParameters{4.0, 32, 32.0, 1.0, 1.0, 0.0};
  auto rope = RotaryEmbedding::Create(p);
  ASSERT_TRUE(rope.ok());
  EXPECT_NEAR(rope->attention_factor(), 0.1 * std::log(4.0) + 1.0, 1e-6);
}

TEST(RopeTest, PlainRopeAndPairings) {
  RopeParameters p;
  p.rotary_dim = 4;
  p.theta = 100.0;
  p.table_positions = 8;
  auto interleaved = RotaryEmbedding::Create(p);
  p.pairing = RotaryPairing::kHalfSplit;
  auto half = RotaryEmbedding::Create(p);
  ASSERT_TRUE(interleaved.ok() && half.ok());
  EXPECT_FLOAT_EQ(interleaved->inverse_frequencies()[1], 0.1f);
  EXPECT_FLOAT_EQ(interleaved->attention_factor(), 1.0f);
  const double a0 = 2.0, a1 = 0.2;  // position 2
  std::vector<float> v = {1, 2, 3, 4};
  interleaved->Apply(v, 2);
  EXPECT_NEAR(v[0], 1 * std::cos(a0) - 2 * std::sin(a0), 1e-6);
  EXPECT_NEAR(v[1], 2 * std::cos(a0) + 1 * std::sin(a0), 1e-6);
  EXPECT_NEAR(v[2], 3 * std::cos(a1) - 4 * std::sin(a1), 1e-6);
  std::vector<float> h = {1, 3, 2, 4};  // pairs (0,2), (1,3)
  half->Apply(h, 2);
  EXPECT_NEAR(h[0], v[0], 1e-6);
  EXPECT_NEAR(h[2], v[1], 1e-6);
  EXPECT_NEAR(h[1], v[2], 1e-6);
  EXPECT_NEAR(h[3], v[3], 1e-6);
  p.rotary_dim = 3;
  EXPECT_FALSE(RotaryEmbedding::Create(p).ok());
}

}  // namespace
}  // namespace expertmesh::ops
