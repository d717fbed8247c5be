// CUDA kernels vs a float64 host reference on fresh random inputs; output poisoned before each run
// so unwritten elements show. Skips with "skipped: no GPU" where no device is present.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/core/dtype.h"
#include "engine/ops/cuda/cuda_device.h"
#include "engine/ops/cuda/cuda_kernels.h"
#include "engine/ops/cuda/decode_linear.h"
#include "engine/ops/cuda/model_kernels.h"

namespace expertmesh::cuda {
namespace {

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status status = CheckDeviceAvailable();
    if (!status.ok()) GTEST_SKIP() << "skipped: no GPU (" << status.message() << ")";
  }
  std::vector<float> Random(size_t count) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(count);
    for (float& value : values) value = normal(generator_);
    return values;
  }
  DeviceBuffer Upload(const std::vector<float>& values) {
    auto buffer = DeviceBuffer::Allocate(values.size() * sizeof(float));
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    EXPECT_TRUE(buffer->CopyFromHost(values.data(), values.size() * sizeof(float)).ok());
    return std::move(*buffer);
  }
  std::mt19937 generator_{1234};
};

TEST_F(CudaOpsTest, RmsNormMatchesHostReference) {
  for (int64_t cols : {7, 256, 7168}) {
    const int64_t rows = 5;
    const std::vector<float> x = Random(rows * cols), weight = Random(cols);
    DeviceBuffer x_device = Upload(x), weight_device = Upload(weight);
    DeviceBuffer out_device = Upload(std::vector<float>(rows * cols, std::nanf("")));
    ASSERT_TRUE(LaunchRmsNorm(x_device.as<float>(), weight_device.as<float>(), out_device.as<float>(),
                              rows, cols, 1e-6f, nullptr).ok());
    ASSERT_TRUE(Synchronize().ok());
    std::vector<float> out(rows * cols);
    ASSERT_TRUE(out_device.CopyToHost(out.data(), out.size() * sizeof(float)).ok());
    double error = 0, norm = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += double(x[r * cols + c]) * x[r * cols + c];
      const double scale = 1.0 / std::sqrt(sum / cols + 1e-6);
      for (int64_t c = 0; c < cols; ++c) {
        const double expected = x[r * cols + c] * scale * weight[c];
        ASSERT_FALSE(std::isnan(out[r * cols + c])) << "unwritten output at " << r << "," << c;
        error += (out[r * cols + c] - expected) * (out[r * cols + c] - expected);
        norm += expected * expected;
      }
    }
    EXPECT_LT(std::sqrt(error / norm), 1e-5) << "cols=" << cols;
  }
}

TEST_F(CudaOpsTest, SiluMultiplyAndBFloat16Widening) {
  const int64_t count = 100003;
  const std::vector<float> gate = Random(count), up = Random(count);
  DeviceBuffer gate_device = Upload(gate), up_device = Upload(up);
  DeviceBuffer out_device = Upload(std::vector<float>(count, std::nanf("")));
  ASSERT_TRUE(LaunchSiluMultiply(gate_device.as<float>(), up_device.as<float>(), out_device.as<float>(),
                                 count, nullptr).ok());
  std::vector<float> out(count);
  ASSERT_TRUE(out_device.CopyToHost(out.data(), count * sizeof(float)).ok());
  for (int64_t i = 0; i < count; ++i) {
    const double expected = gate[i] / (1.0 + std::exp(-double(gate[i]))) * up[i];
    ASSERT_NEAR(out[i], expected, 1e-5 * (1 + std::fabs(expected))) << i;
  }

  std::vector<uint16_t> bits(count);
  for (int64_t i = 0; i < count; ++i) bits[i] = FloatToBFloat16(gate[i]);
  auto bits_device = DeviceBuffer::Allocate(count * sizeof(uint16_t));
  ASSERT_TRUE(bits_device.ok());
  ASSERT_TRUE(bits_device->CopyFromHost(bits.data(), count * sizeof(uint16_t)).ok());
  ASSERT_TRUE(LaunchBFloat16ToFloat(bits_device->as<uint16_t>(), out_device.as<float>(), count, nullptr).ok());
  ASSERT_TRUE(out_device.CopyToHost(out.data(), count * sizeof(float)).ok());
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(out[i], BFloat16ToFloat(bits[i])) << i;
}

// The decode-time linear kernels against float64 sums of the same bf16-rounded operands (the
// kernels round the float32 rows to bf16 while loading), for row counts of one and two passes,
// shapes whose split-k is 1, 2, 4 and 8, N not a multiple of 16, and both write modes.
TEST_F(CudaOpsTest, DecodeLinearAndSwiGluMatchHostReference) {
  struct Shape {
    int64_t k, n;
  };
  for (const Shape shape : {Shape{64, 40}, Shape{2048, 576}, Shape{1024, 3000}, Shape{4096, 72}}) {
    const int64_t k = shape.k, n = shape.n;
    std::vector<float> w = Random(n * k);
    std::vector<uint16_t> w_bits(n * k);
    for (int64_t i = 0; i < n * k; ++i) {
      w_bits[i] = FloatToBFloat16(w[i]);
      w[i] = BFloat16ToFloat(w_bits[i]);
    }
    auto w_device = DeviceBuffer::Allocate(w_bits.size() * sizeof(uint16_t));
    ASSERT_TRUE(w_device.ok());
    ASSERT_TRUE(w_device->CopyFromHost(w_bits.data(), w_bits.size() * sizeof(uint16_t)).ok());
    for (int64_t rows : {1, 3, 8, 17, 33, 64}) {
      const std::vector<float> x = Random(rows * k);
      std::vector<double> rounded(x.begin(), x.end());
      for (double& v : rounded) v = BFloat16ToFloat(FloatToBFloat16(static_cast<float>(v)));
      DeviceBuffer x_device = Upload(x);
      for (int variant = 0; variant < 4; ++variant) {  // (accumulate, weight ring) both ways
        const bool accumulate = variant % 2 == 1, ring = variant < 2;
        const std::vector<float> start = accumulate ? Random(rows * n) : std::vector<float>(rows * n, std::nanf(""));
        DeviceBuffer y_device = Upload(start);
        ASSERT_TRUE(LaunchDecodeLinear(x_device.as<float>(), rows, k, w_device->as<uint16_t>(), n, y_device.as<float>(),
                                       accumulate, nullptr, ring).ok());
        ASSERT_TRUE(Synchronize().ok());
        std::vector<float> y(rows * n);
        ASSERT_TRUE(y_device.CopyToHost(y.data(), y.size() * sizeof(float)).ok());
        double error = 0, norm = 0;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < n; ++j) {
            double expected = accumulate ? start[r * n + j] : 0.0;
            for (int64_t c = 0; c < k; ++c) expected += rounded[r * k + c] * w[j * k + c];
            ASSERT_FALSE(std::isnan(y[r * n + j])) << "unwritten output " << r << "," << j << " k=" << k;
            error += (y[r * n + j] - expected) * (y[r * n + j] - expected);
            norm += expected * expected;
          }
        }
        EXPECT_LT(std::sqrt(error / norm), 1e-5) << "k=" << k << " n=" << n << " rows=" << rows
                                                 << " accumulate=" << accumulate << " ring=" << ring;
      }
      if (n % 2 != 0) continue;
      // SwiGLU over the same weights read as [gate; up] with I = n / 2.
      const int64_t intermediate = n / 2;
      DeviceBuffer h_device = Upload(std::vector<float>(rows * intermediate, std::nanf("")));
      const bool ring = rows % 2 == 1;  // both weight paths over the row counts
      ASSERT_TRUE(LaunchDecodeSwiGlu(x_device.as<float>(), rows, k, w_device->as<uint16_t>(), intermediate,
                                     h_device.as<float>(), nullptr, ring).ok());
      ASSERT_TRUE(Synchronize().ok());
      std::vector<float> h(rows * intermediate);
      ASSERT_TRUE(h_device.CopyToHost(h.data(), h.size() * sizeof(float)).ok());
      double error = 0, norm = 0;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < intermediate; ++j) {
          double gate = 0, up = 0;
          for (int64_t c = 0; c < k; ++c) {
            gate += rounded[r * k + c] * w[j * k + c];
            up += rounded[r * k + c] * w[(intermediate + j) * k + c];
          }
          const double expected = gate / (1.0 + std::exp(-gate)) * up;
          ASSERT_FALSE(std::isnan(h[r * intermediate + j])) << "unwritten h " << r << "," << j;
          error += (h[r * intermediate + j] - expected) * (h[r * intermediate + j] - expected);
          norm += expected * expected;
        }
      }
      EXPECT_LT(std::sqrt(error / norm), 1e-5) << "SwiGLU k=" << k << " I=" << intermediate << " rows=" << rows
                                               << " ring=" << ring;
    }
  }
  // Bad shapes are errors, not launches.
  EXPECT_FALSE(LaunchDecodeLinear(nullptr, 65, 64, nullptr, 16, nullptr, false, nullptr).ok());
  EXPECT_FALSE(LaunchDecodeLinear(nullptr, 1, 60, nullptr, 16, nullptr, false, nullptr).ok());
}

// Decode attention with the cached positions split over blocks (flash-decoding partials and their
// combine) equals the one-block-per-head result; contexts of 1 to 300 positions, 16 heads.
TEST_F(CudaOpsTest, SplitDecodeAttentionEqualsUnsplit) {
  const MlaDims dims{16, 128, 64, 512};
  const int64_t row = dims.rank + dims.rope, page_tokens = 64, max_pages = 8;
  for (int64_t length : {1, 17, 100, 300}) {
    const int64_t tokens = 2;  // two sequences of the same length, pages interleaved
    std::vector<int32_t> table(tokens * max_pages), positions(tokens, static_cast<int32_t>(length - 1)), owners = {0, 1};
    for (int64_t p = 0; p < max_pages; ++p) {
      table[p] = static_cast<int32_t>(2 * p + 1);
      table[max_pages + p] = static_cast<int32_t>(2 * p);
    }
    DeviceBuffer cache = Upload(Random(2 * max_pages * page_tokens * row));
    DeviceBuffer q_abs = Upload(Random(tokens * dims.heads * dims.rank));
    DeviceBuffer q = Upload(Random(tokens * dims.heads * (dims.nope + dims.rope)));
    auto upload_ints = [&](const std::vector<int32_t>& v) {
      auto buffer = DeviceBuffer::Allocate(v.size() * 4);
      EXPECT_TRUE(buffer.ok() && buffer->CopyFromHost(v.data(), v.size() * 4).ok());
      return std::move(*buffer);
    };
    DeviceBuffer table_device = upload_ints(table), pos_device = upload_ints(positions), seq_device = upload_ints(owners);
    const PagedCacheView view{cache.as<float>(), pos_device.as<int32_t>(), seq_device.as<int32_t>(),
                              table_device.as<int32_t>(), max_pages, page_tokens};
    std::vector<float> contexts[2];
    for (int split = 0; split < 2; ++split) {
      DeviceBuffer context = Upload(std::vector<float>(tokens * dims.heads * dims.rank, std::nanf("")));
      DeviceBuffer scratch = Upload(std::vector<float>(8 * 256 * (dims.rank + 2), std::nanf("")));
      ASSERT_TRUE(LaunchMlaAttention(q_abs.as<float>(), q.as<float>(), 0.07f, dims, view, tokens, context.as<float>(),
                                     nullptr, split ? scratch.as<float>() : nullptr, split ? 8 * 256 * (dims.rank + 2) : 0)
                      .ok());
      ASSERT_TRUE(Synchronize().ok());
      contexts[split].resize(tokens * dims.heads * dims.rank);
      ASSERT_TRUE(context.CopyToHost(contexts[split].data(), contexts[split].size() * 4).ok());
    }
    double error = 0, norm = 0;
    for (size_t i = 0; i < contexts[0].size(); ++i) {
      ASSERT_FALSE(std::isnan(contexts[1][i])) << "unwritten context " << i << " length " << length;
      error += (contexts[1][i] - contexts[0][i]) * double(contexts[1][i] - contexts[0][i]);
      norm += double(contexts[0][i]) * contexts[0][i];
    }
    EXPECT_LT(std::sqrt(error / norm), 1e-5) << "length " << length;
  }
}

// Greedy decoding's argmax over vocabulary slices (two kernels) picks the first maximum of each
// row and does the position bookkeeping, as the one-block version does.
TEST_F(CudaOpsTest, SlicedGreedyArgMaxMatchesHost) {
  const int64_t batch = 3, vocab = 102407, steps = 4;
  std::vector<float> logits = Random(batch * vocab);
  logits[1 * vocab + 70000] = 50.0f;  // row 1: a tie, the first one wins
  logits[1 * vocab + 90000] = 50.0f;
  logits[2 * vocab + vocab - 1] = 60.0f;  // row 2: the last element
  DeviceBuffer logits_device = Upload(logits);
  auto ints = [&](std::vector<int32_t> v) {
    auto buffer = DeviceBuffer::Allocate(v.size() * 4);
    EXPECT_TRUE(buffer.ok() && buffer->CopyFromHost(v.data(), v.size() * 4).ok());
    return std::move(*buffer);
  };
  DeviceBuffer ids = ints({-1, -1, -1}), pos = ints({10, 20, 30}), first = ints({9, 20, 30});
  DeviceBuffer generated = ints(std::vector<int32_t>(batch * steps, -7));
  DeviceBuffer scratch = Upload(std::vector<float>(batch * 64 * 2, 0.0f));
  ASSERT_TRUE(LaunchGreedyAdvance(logits_device.as<float>(), batch, vocab, ids.as<int32_t>(), pos.as<int32_t>(),
                                  first.as<int32_t>(), generated.as<int32_t>(), steps, nullptr, scratch.data(),
                                  static_cast<int64_t>(scratch.bytes()))
                  .ok());
  ASSERT_TRUE(Synchronize().ok());
  std::vector<int32_t> got(batch), positions(batch), out(batch * steps);
  ASSERT_TRUE(ids.CopyToHost(got.data(), batch * 4).ok());
  ASSERT_TRUE(pos.CopyToHost(positions.data(), batch * 4).ok());
  ASSERT_TRUE(generated.CopyToHost(out.data(), out.size() * 4).ok());
  for (int64_t b = 0; b < batch; ++b) {
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; ++v) {
      if (logits[b * vocab + v] > logits[b * vocab + best]) best = v;
    }
    EXPECT_EQ(got[b], best) << "row " << b;
    EXPECT_EQ(positions[b], (b == 0 ? 11 : b == 1 ? 21 : 31));
  }
  EXPECT_EQ(got[1], 70000);
  EXPECT_EQ(got[2], vocab - 1);
  EXPECT_EQ(out[0 * steps + 1], got[0]);  // row 0 was at step 1 (pos 10, first 9)
  EXPECT_EQ(out[1 * steps + 0], got[1]);
  EXPECT_EQ(out[0 * steps + 0], -7);  // untouched
}

}  // namespace
}  // namespace expertmesh::cuda
