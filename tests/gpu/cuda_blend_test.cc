// Assembly-of-Experts blend kernels vs a float64 host reference on fresh random bf16 parents:
// the weighted sum (float32 math, one bf16 rounding: within one bf16 ulp plus the float32
// accumulation error of the float64 result), the
// delta test choosing the base parent bit-exactly, the copy kernel, and the device random fills.
#include <cmath>
#include <cstring>

#include "engine/ops/cuda/blend_kernels.h"
#include "engine/ops/cuda/cuda_device.h"
#include "tests/gpu/gpu_test_util.h"

namespace expertmesh::cuda {
namespace {

class CudaBlendTest : public ::testing::Test {
 protected:
  void SetUp() override { EXPERTMESH_SKIP_WITHOUT_GPU(); }

  DeviceBuffer Upload(const std::vector<uint16_t>& values) {
    auto buffer = DeviceBuffer::Allocate(values.size() * 2);
    EXPECT_TRUE(buffer.ok());
    EXPECT_TRUE(buffer->CopyFromHost(values.data(), values.size() * 2).ok());
    return std::move(*buffer);
  }
  std::vector<uint16_t> RandomBf16(size_t count, float scale) {
    std::vector<uint16_t> out(count);
    std::uniform_real_distribution<float> uniform(-scale, scale);
    for (uint16_t& v : out) v = FloatToBFloat16(uniform(rng_));
    return out;
  }
  std::mt19937_64 rng_{77};
};

TEST_F(CudaBlendTest, BlendMatchesHostReferenceAndDeltaKeepsBase) {
  const int64_t count = 1 << 20;
  for (int parents_count : {1, 2, 3}) {
    std::vector<std::vector<uint16_t>> host;
    std::vector<DeviceBuffer> device;
    BlendParents parents;
    parents.count = parents_count;
    for (int p = 0; p < parents_count; ++p) {
      host.push_back(RandomBf16(count, 0.05f));
      // Parents 1.. are the base plus a small perturbation, so the difference is controlled.
      if (p > 0) {
        for (int64_t i = 0; i < count; ++i) {
          host[p][i] = FloatToBFloat16(BFloat16ToFloat(host[0][i]) + 0.1f * BFloat16ToFloat(host[p][i]));
        }
      }
      device.push_back(Upload(host[p]));
      parents.tensors[p] = device[p].as<uint16_t>();
      parents.lambdas[p] = 1.0f / parents_count + 0.1f * p;
    }
    // Float64 reference: norms, relative differences, blend.
    double base_norm = 0.0, largest_relative = 0.0;
    for (int64_t i = 0; i < count; ++i) base_norm += std::pow(BFloat16ToFloat(host[0][i]), 2);
    for (int p = 1; p < parents_count; ++p) {
      double d = 0.0;
      for (int64_t i = 0; i < count; ++i) d += std::pow(BFloat16ToFloat(host[p][i]) - BFloat16ToFloat(host[0][i]), 2);
      largest_relative = std::max(largest_relative, std::sqrt(d / base_norm));
    }
    auto sums = DeviceBuffer::Allocate(kMaxBlendParents * sizeof(double));
    auto out = DeviceBuffer::Allocate(count * 2);
    auto kept = DeviceBuffer::Allocate(4);
    ASSERT_TRUE(sums.ok() && out.ok() && kept.ok());
    for (float delta : {float(largest_relative * 0.5), float(largest_relative * 2.0 + 1e-6)}) {
      std::vector<double> zeros(kMaxBlendParents, 0.0);
      ASSERT_TRUE(sums->CopyFromHost(zeros.data(), zeros.size() * 8).ok());
      ASSERT_TRUE(LaunchBlendDifferenceNorms(parents, count, sums->as<double>(), nullptr).ok());
      std::vector<uint16_t> poison(count, 0x7fc1);  // NaN: unwritten elements show
      ASSERT_TRUE(out->CopyFromHost(poison.data(), count * 2).ok());
      ASSERT_TRUE(LaunchBlend(parents, count, sums->as<double>(), delta, out->as<uint16_t>(), kept->as<int32_t>(),
                              nullptr).ok());
      ASSERT_TRUE(Synchronize().ok());
      std::vector<double> device_sums(kMaxBlendParents);
      ASSERT_TRUE(sums->CopyToHost(device_sums.data(), device_sums.size() * 8).ok());
      EXPECT_NEAR(device_sums[0], base_norm, 1e-5 * base_norm);
      std::vector<uint16_t> result(count);
      ASSERT_TRUE(out->CopyToHost(result.data(), count * 2).ok());
      int32_t kept_base = -1;
      ASSERT_TRUE(kept->CopyToHost(&kept_base, 4).ok());
      const bool expect_base = parents_count == 1 ? true : largest_relative < delta;
      EXPECT_EQ(kept_base, expect_base ? 1 : 0) << parents_count << " parents, delta " << delta;
      int64_t off_by_more_than_one_ulp = 0;
      for (int64_t i = 0; i < count; ++i) {
        if (expect_base) {
          ASSERT_EQ(result[i], host[0][i]) << i;
          continue;
        }
        // Float32 accumulation error (bounded by the terms' magnitudes, which matters where they
        // cancel) plus one bf16 rounding of the result.
        double expected = 0.0, magnitude = 0.0;
        for (int p = 0; p < parents_count; ++p) {
          expected += parents.lambdas[p] * BFloat16ToFloat(host[p][i]);
          magnitude += std::abs(parents.lambdas[p] * BFloat16ToFloat(host[p][i]));
        }
        const double bf16_ulp = std::ldexp(1.0, std::ilogb(std::max(std::abs(expected), 1e-30)) - 7);
        const double allowed = bf16_ulp + parents_count * magnitude * std::ldexp(1.0, -23);
        if (std::abs(BFloat16ToFloat(result[i]) - expected) > allowed) ++off_by_more_than_one_ulp;
      }
      EXPECT_EQ(off_by_more_than_one_ulp, 0) << parents_count << " parents";
    }
  }
}

TEST_F(CudaBlendTest, UnconditionalBlendAndBadArguments) {
  const int64_t count = 4096;
  std::vector<uint16_t> a = RandomBf16(count, 1.0f), b = RandomBf16(count, 1.0f);
  DeviceBuffer da = Upload(a), db = Upload(b);
  auto out = DeviceBuffer::Allocate(count * 2);
  ASSERT_TRUE(out.ok());
  BlendParents parents;
  parents.count = 2;
  parents.tensors[0] = da.as<uint16_t>();
  parents.tensors[1] = db.as<uint16_t>();
  parents.lambdas[0] = 0.25f;
  parents.lambdas[1] = 0.75f;
  ASSERT_TRUE(LaunchBlend(parents, count, nullptr, 0.0f, out->as<uint16_t>(), nullptr, nullptr).ok());
  std::vector<uint16_t> result(count);
  ASSERT_TRUE(out->CopyToHost(result.data(), count * 2).ok());
  for (int64_t i = 0; i < count; ++i) {
    ASSERT_EQ(result[i], FloatToBFloat16(0.25f * BFloat16ToFloat(a[i]) + 0.75f * BFloat16ToFloat(b[i]))) << i;
  }
  EXPECT_FALSE(LaunchBlend(parents, count + 3, nullptr, 0.0f, out->as<uint16_t>(), nullptr, nullptr).ok());
  parents.count = 9;
  EXPECT_FALSE(LaunchBlend(parents, count, nullptr, 0.0f, out->as<uint16_t>(), nullptr, nullptr).ok());
}

TEST_F(CudaBlendTest, StreamCopyAndRandomFills) {
  const int64_t count = (1 << 20) + 24;
  std::vector<uint16_t> a = RandomBf16(count, 1.0f);
  DeviceBuffer da = Upload(a);
  auto copy = DeviceBuffer::Allocate(count * 2);
  ASSERT_TRUE(copy.ok());
  ASSERT_TRUE(LaunchStreamCopy(da.data(), copy->data(), count * 2, nullptr).ok());
  std::vector<uint16_t> back(count);
  ASSERT_TRUE(copy->CopyToHost(back.data(), count * 2).ok());
  EXPECT_EQ(back, a);

  auto fill = DeviceBuffer::Allocate(count * 4);
  ASSERT_TRUE(fill.ok());
  std::vector<float> first(count), second(count);
  ASSERT_TRUE(LaunchFillUniformF32(fill->as<float>(), count, 5, 0.5f, nullptr).ok());
  ASSERT_TRUE(fill->CopyToHost(first.data(), count * 4).ok());
  ASSERT_TRUE(LaunchFillUniformF32(fill->as<float>(), count, 5, 0.5f, nullptr).ok());
  ASSERT_TRUE(fill->CopyToHost(second.data(), count * 4).ok());
  EXPECT_EQ(first, second);
  double mean = 0.0;
  for (float v : first) {
    ASSERT_TRUE(v >= -0.5f && v < 0.5f) << v;
    mean += v;
  }
  EXPECT_NEAR(mean / count, 0.0, 0.01);
  ASSERT_TRUE(LaunchFillUniformFp8(fill->as<uint8_t>(), count, 6, 1.0f, nullptr).ok());
  std::vector<uint8_t> bytes(count);
  ASSERT_TRUE(fill->CopyToHost(bytes.data(), count).ok());
  for (uint8_t b : bytes) ASSERT_FALSE(std::isnan(Float8E4M3ToFloat(b)));
}

}  // namespace
}  // namespace expertmesh::cuda
