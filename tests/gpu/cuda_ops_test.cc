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

}  // namespace
}  // namespace expertmesh::cuda
