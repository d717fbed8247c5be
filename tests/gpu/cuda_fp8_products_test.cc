// The W8A8 path of FP8 experts (ExpertGemmPath::kCublasFp8): cuBLASLt's block-scaled FP8 GEMMs
// with rows and SwiGLU outputs rounded to E4M3 per 128 values. Checked two ways: against a host
// emulation of exactly that rounding (E4M3 activations, bf16 GEMM outputs; only summation order
// and the tensor cores' accumulation differ, tolerance 2e-2) and against the float32 CPU reference
// on the same dequantized weights (the rounding of activations to 3 mantissa bits costs a few
// percent; 8e-2 still catches a wrong scale layout or row mapping, which gives O(1) errors).
#include <algorithm>
#include <cstdio>

#include "engine/core/dtype.h"
#include "engine/model/cuda/cuda_routed_experts.h"
#include "engine/model/local_routed_experts.h"
#include "engine/ops/cuda/fp8_block_gemm.h"
#include "tests/gpu/gpu_test_util.h"

namespace expertmesh {
namespace {

using gpu_testing::AsBytes;
using gpu_testing::QuantizeFp8Block;
using gpu_testing::RandomTensor;
using gpu_testing::RandomVector;
using gpu_testing::RelativeNormError;

// DeepSeek-V3's activation rounding of one 128-value block: scale = amax / 448, values rounded to
// E4M3 after multiplying by 448 / amax (what the kernels do), returned dequantized.
void RoundBlocksToE4M3(std::vector<float>& values) {
  for (size_t begin = 0; begin < values.size(); begin += 128) {
    float amax = 0.0f;
    for (size_t i = begin; i < begin + 128; ++i) amax = std::max(amax, std::fabs(values[i]));
    const float inverse = amax > 0.0f ? 448.0f / amax : 0.0f, scale = amax / 448.0f;
    for (size_t i = begin; i < begin + 128; ++i) values[i] = Float8E4M3ToFloat(FloatToFloat8E4M3(values[i] * inverse)) * scale;
  }
}

float RoundToBf16(double value) { return BFloat16ToFloat(FloatToBFloat16(static_cast<float>(value))); }

class CudaFp8ProductsTest : public ::testing::Test {
 protected:
  void SetUp() override { EXPERTMESH_SKIP_WITHOUT_GPU(); }

  void Build(int64_t hidden, int64_t intermediate, int64_t experts) {
    hidden_ = hidden;
    intermediate_ = intermediate;
    cpu_ = std::make_unique<LocalRoutedExperts>(hidden, intermediate);
    auto gpu = CudaRoutedExperts::Create({hidden, intermediate, experts, GpuExpertFormat::kFP8Block});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = std::move(gpu).value();
    weights_.clear();
    for (int32_t e = 0; e < experts; ++e) {
      auto gate = QuantizeFp8Block(RandomTensor({intermediate, hidden}, rng_, std::sqrt(3.0f / hidden)));
      auto up = QuantizeFp8Block(RandomTensor({intermediate, hidden}, rng_, std::sqrt(3.0f / hidden)));
      auto down = QuantizeFp8Block(RandomTensor({hidden, intermediate}, rng_, std::sqrt(3.0f / intermediate)));
      ExpertTensorBytes bytes{DType::kF8E4M3, AsBytes(gate.values), AsBytes(up.values), AsBytes(down.values),
                              AsBytes(gate.scale_inv), AsBytes(up.scale_inv), AsBytes(down.scale_inv)};
      ASSERT_TRUE(gpu_->SetExpertFromBytes(0, e, bytes).ok());
      MlpWeights mlp{gate.dequantized, up.dequantized, down.dequantized};
      weights_.push_back(mlp);
      ASSERT_TRUE(cpu_->AddExpert(0, e, std::move(mlp)).ok());
    }
  }

  // The emulated W8A8 result of one token's slots, added to `out` [hidden].
  void Emulate(std::span<const float> x, std::span<const int32_t> ids, std::span<const float> gate_weights,
               float* out) {
    std::vector<float> rounded(x.begin(), x.end());
    RoundBlocksToE4M3(rounded);
    for (size_t k = 0; k < ids.size(); ++k) {
      if (ids[k] < 0) continue;
      const MlpWeights& w = weights_[ids[k]];
      std::vector<float> h(intermediate_);
      for (int64_t j = 0; j < intermediate_; ++j) {
        double gate = 0, up = 0;
        for (int64_t c = 0; c < hidden_; ++c) {
          gate += double(rounded[c]) * w.gate_proj.data()[j * hidden_ + c];
          up += double(rounded[c]) * w.up_proj.data()[j * hidden_ + c];
        }
        const float g = RoundToBf16(gate), u = RoundToBf16(up);
        h[j] = g / (1.0f + std::exp(-g)) * u;
      }
      RoundBlocksToE4M3(h);
      for (int64_t i = 0; i < hidden_; ++i) {
        double y = 0;
        for (int64_t j = 0; j < intermediate_; ++j) y += double(h[j]) * w.down_proj.data()[i * intermediate_ + j];
        out[i] += gate_weights[k] * RoundToBf16(y);
      }
    }
  }

  // Runs `tokens` tokens (top_k distinct experts each, every 5th slot empty) through kCublasFp8;
  // returns {error vs the emulation, error vs the float32 CPU reference}.
  std::pair<double, double> Compare(int64_t tokens, int64_t top_k, int64_t experts) {
    std::vector<float> x = RandomVector(tokens * hidden_, rng_, 1.0f);
    std::vector<int32_t> ids;
    std::vector<float> gate_weights;
    std::uniform_real_distribution<float> weight(0.05f, 1.0f);
    for (int64_t t = 0; t < tokens; ++t) {
      std::vector<int32_t> pool(experts);
      for (int32_t e = 0; e < experts; ++e) pool[e] = e;
      std::shuffle(pool.begin(), pool.end(), rng_);
      for (int64_t k = 0; k < top_k; ++k) {
        ids.push_back((t * top_k + k) % 5 == 2 ? -1 : pool[k]);
        gate_weights.push_back(weight(rng_));
      }
    }
    RoutedExpertBatch batch{0, tokens, hidden_, top_k, x, ids, gate_weights};
    std::vector<float> gpu(tokens * hidden_, 0.0f), cpu(tokens * hidden_, 0.0f), emulated(tokens * hidden_, 0.0f);
    const absl::Status status = gpu_->Compute(batch, gpu);
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_TRUE(cpu_->Compute(batch, cpu).ok());
    for (int64_t t = 0; t < tokens; ++t) {
      Emulate(std::span(x.data() + t * hidden_, hidden_), std::span(ids.data() + t * top_k, top_k),
              std::span(gate_weights.data() + t * top_k, top_k), emulated.data() + t * hidden_);
    }
    return {RelativeNormError(gpu, emulated), RelativeNormError(gpu, cpu)};
  }

  int64_t hidden_ = 0, intermediate_ = 0;
  std::mt19937_64 rng_{20261206};
  std::vector<MlpWeights> weights_;
  std::unique_ptr<LocalRoutedExperts> cpu_;
  std::unique_ptr<CudaRoutedExperts> gpu_;
};

TEST_F(CudaFp8ProductsTest, CublasLtPassesTheKnownProductCheck) {
  auto gemm = cuda::Fp8BlockGemm::Create();
  EXPECT_TRUE(gemm.ok()) << gemm.status();
}

// 512 x 512 experts (4 scale blocks each way), rows per expert from 0 to ~40: padding to 16 rows,
// experts without rows, several 16-row groups.
TEST_F(CudaFp8ProductsTest, W8A8MatchesAnEmulationOfItsRounding) {
  Build(512, 512, 8);
  gpu_->set_path(ExpertGemmPath::kCublasFp8);
  for (int64_t tokens : {5, 40, 100}) {
    const auto [emulation_error, reference_error] = Compare(tokens, 3, 8);
    std::printf("W8A8 path, %lld tokens: error vs emulation %.3g, vs float32 reference %.3g\n", (long long)tokens,
                emulation_error, reference_error);
    EXPECT_LT(emulation_error, 2e-2) << tokens;
    EXPECT_LT(reference_error, 8e-2) << tokens;
  }
  // kAuto takes it from fp8_products_min_tokens tokens (here 20: at most 20 rows per expert, below
  // max_rows_for_direct_kernels) and above max_rows_for_direct_kernels rows per expert (250)...
  gpu_->set_path(ExpertGemmPath::kAuto);
  gpu_->set_fp8_activations(true);
  gpu_->set_fp8_products_min_tokens(16);
  for (int64_t tokens : {20, 250}) {
    const auto [emulation_error, reference_error] = Compare(tokens, 3, 8);
    EXPECT_LT(emulation_error, 2e-2) << tokens;
    EXPECT_LT(reference_error, 8e-2) << tokens;
  }
  // ...and not below it (the tensor-core kernels keep activations bf16: far closer to float32
  // than the ~4% that rounding them to E4M3 costs).
  const auto [emulation_error, reference_error] = Compare(8, 3, 8);
  std::printf("kAuto, 8 tokens: error vs W8A8 emulation %.3g, vs float32 reference %.3g\n", emulation_error,
              reference_error);
  EXPECT_LT(reference_error, 1e-2);
}

TEST_F(CudaFp8ProductsTest, RefusesWhatItCannotTake) {
  Build(320, 256, 4);  // 320 is not a multiple of 512
  gpu_->set_path(ExpertGemmPath::kCublasFp8);
  std::vector<float> x(16 * 320, 0.5f), out(16 * 320, 0.0f), weights(16, 1.0f);
  std::vector<int32_t> ids(16, 1);
  RoutedExpertBatch batch{0, 16, 320, 1, x, ids, weights};
  EXPECT_EQ(gpu_->Compute(batch, out).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(gpu_->Fp8ProductsAvailable().code(), absl::StatusCode::kFailedPrecondition);
  auto bf16 = CudaRoutedExperts::Create({512, 512, 4, GpuExpertFormat::kBF16});
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ((*bf16)->Fp8ProductsAvailable().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace expertmesh
