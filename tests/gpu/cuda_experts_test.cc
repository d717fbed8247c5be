// CudaRoutedExperts vs the CPU reference (LocalRoutedExperts, float32) on fresh random weights and
// batches, for every product path (tensor-core kernels, per-expert cuBLAS, grouped cuBLAS) and
// weight format (bf16, FP8 block-scaled, float32), the few-token kernels (also inside a CUDA
// graph), plus the error contract. FP8 runs its MMA in
// f16 on the exactly converted E4M3 values (activations rounded to f16, 11 bits). Tolerances are
// relative-norm errors: bf16 operands (weights and activations rounded to 8 mantissa bits) give
// ~3e-3, so 1.5e-2 leaves margin without hiding wrong indexing (which gives O(1)); float32
// storage through cuBLAS without TF32 differs from OpenBLAS only in summation order (< 1e-5).
#include "engine/model/cuda/cuda_routed_experts.h"

#include <cuda_runtime.h>

#include <limits>
#include <map>
#include <set>
#include <string>

#include "engine/model/local_routed_experts.h"
#include "tests/gpu/gpu_test_util.h"

namespace expertmesh {
namespace {

using gpu_testing::AsBytes;
using gpu_testing::QuantizeFp8Block;
using gpu_testing::RandomTensor;
using gpu_testing::RandomVector;
using gpu_testing::RelativeNormError;

constexpr double kBf16Tolerance = 1.5e-2;
constexpr double kF32Tolerance = 1e-5;

struct Shape {
  int64_t hidden, intermediate, experts;
};

struct Batch {
  int64_t tokens = 0, top_k = 0;
  std::vector<float> activations, weights;
  std::vector<int32_t> ids;
  RoutedExpertBatch View(int64_t layer, int64_t hidden) const {
    RoutedExpertBatch b;
    b.layer = layer;
    b.num_tokens = tokens;
    b.hidden_size = hidden;
    b.top_k = top_k;
    b.activations = activations;
    b.expert_ids = ids;
    b.gate_weights = weights;
    return b;
  }
};

// Distinct experts per token drawn from `held`; every 7th slot left empty (-1).
Batch RandomBatch(int64_t tokens, int64_t top_k, const std::vector<int32_t>& held, int64_t hidden,
                  std::mt19937_64& rng) {
  Batch b;
  b.tokens = tokens;
  b.top_k = top_k;
  b.activations = RandomVector(tokens * hidden, rng, 1.0f);
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int32_t> pool = held;
    std::shuffle(pool.begin(), pool.end(), rng);
    for (int64_t k = 0; k < top_k; ++k) {
      const bool empty = (t * top_k + k) % 7 == 3 || k >= static_cast<int64_t>(pool.size());
      b.ids.push_back(empty ? -1 : pool[k]);
      b.weights.push_back(weight(rng));
    }
  }
  return b;
}

MlpWeights RandomMlp(const Shape& s, std::mt19937_64& rng) {
  MlpWeights m;
  m.gate_proj = RandomTensor({s.intermediate, s.hidden}, rng, std::sqrt(3.0f / s.hidden));
  m.up_proj = RandomTensor({s.intermediate, s.hidden}, rng, std::sqrt(3.0f / s.hidden));
  m.down_proj = RandomTensor({s.hidden, s.intermediate}, rng, std::sqrt(3.0f / s.intermediate));
  return m;
}

// Device copies of a batch's activations, expert ids and gate weights, and an output buffer of the
// activations' size.
struct DeviceBatchBuffers {
  cuda::DeviceBuffer x, out, ids, weights;
  void Upload(const std::vector<float>& host_x, const std::vector<int32_t>& host_ids,
              const std::vector<float>& host_weights) {
    auto allocated_x = cuda::DeviceBuffer::Allocate(host_x.size() * 4);
    auto allocated_out = cuda::DeviceBuffer::Allocate(host_x.size() * 4);
    auto allocated_ids = cuda::DeviceBuffer::Allocate(host_ids.size() * 4);
    auto allocated_weights = cuda::DeviceBuffer::Allocate(host_weights.size() * 4);
    ASSERT_TRUE(allocated_x.ok() && allocated_out.ok() && allocated_ids.ok() && allocated_weights.ok());
    x = std::move(allocated_x).value();
    out = std::move(allocated_out).value();
    ids = std::move(allocated_ids).value();
    weights = std::move(allocated_weights).value();
    ASSERT_TRUE(x.CopyFromHost(host_x.data(), host_x.size() * 4).ok());
    ASSERT_TRUE(ids.CopyFromHost(host_ids.data(), host_ids.size() * 4).ok());
    ASSERT_TRUE(weights.CopyFromHost(host_weights.data(), host_weights.size() * 4).ok());
  }
};

class CudaExpertsTest : public ::testing::Test {
 protected:
  void SetUp() override { EXPERTMESH_SKIP_WITHOUT_GPU(); }

  // CPU reference and GPU experts with the same weights: layer 1 holds every expert, layer 3 two.
  void Build(const Shape& s, GpuExpertFormat format) {
    shape_ = s;
    cpu_ = std::make_unique<LocalRoutedExperts>(s.hidden, s.intermediate);
    CudaExpertOptions options{s.hidden, s.intermediate, s.experts, format};
    auto gpu = CudaRoutedExperts::Create(options);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = std::move(gpu).value();
    for (int64_t layer : {1, 3}) {
      for (int32_t e = 0; e < s.experts; ++e) {
        if (layer == 3 && e != 2 && e != 5) continue;
        MlpWeights mlp = RandomMlp(s, rng_);
        if (format == GpuExpertFormat::kFP8Block) {
          auto gate = QuantizeFp8Block(mlp.gate_proj), up = QuantizeFp8Block(mlp.up_proj),
               down = QuantizeFp8Block(mlp.down_proj);
          ExpertTensorBytes bytes{DType::kF8E4M3, AsBytes(gate.values), AsBytes(up.values), AsBytes(down.values),
                                  AsBytes(gate.scale_inv), AsBytes(up.scale_inv), AsBytes(down.scale_inv)};
          ASSERT_TRUE(gpu_->SetExpertFromBytes(layer, e, bytes).ok());
          mlp = MlpWeights{gate.dequantized, up.dequantized, down.dequantized};
        } else {
          ASSERT_TRUE(gpu_->SetExpert(layer, e, mlp).ok());
        }
        ASSERT_TRUE(cpu_->AddExpert(layer, e, std::move(mlp)).ok());
      }
    }
  }

  // Runs one random batch through both; returns the relative-norm error of the GPU result.
  double Compare(int64_t layer, int64_t tokens, int64_t top_k) {
    std::vector<int32_t> held;
    for (int32_t e = 0; e < shape_.experts; ++e) {
      if (layer == 1 || e == 2 || e == 5) held.push_back(e);
    }
    return CompareBatch(layer, RandomBatch(tokens, top_k, held, shape_.hidden, rng_));
  }

  // Runs `b` through both; returns the relative-norm error of the GPU result.
  double CompareBatch(int64_t layer, const Batch& b) {
    const int64_t tokens = b.tokens;
    // Both add to the output: start from the same random values.
    std::vector<float> expected = RandomVector(tokens * shape_.hidden, rng_, 1.0f);
    std::vector<float> actual = expected;
    EXPECT_TRUE(cpu_->Compute(b.View(layer, shape_.hidden), expected).ok());
    const absl::Status status = gpu_->Compute(b.View(layer, shape_.hidden), actual);
    EXPECT_TRUE(status.ok()) << status;
    return RelativeNormError(actual, expected);
  }

  Shape shape_{};
  std::mt19937_64 rng_{20261125};
  std::unique_ptr<LocalRoutedExperts> cpu_;
  std::unique_ptr<CudaRoutedExperts> gpu_;
};

// Every path (the gather token by token, the permutation 8 slots per thread and step, SiLU*up in
// 16-byte pieces).
TEST_F(CudaExpertsTest, Bf16EveryPathMatchesCpu) {
  for (const Shape& s : {Shape{64, 32, 8}, Shape{72, 40, 8}, Shape{256, 96, 16}}) {
    Build(s, GpuExpertFormat::kBF16);
    for (ExpertGemmPath path : {ExpertGemmPath::kDirect, ExpertGemmPath::kCublasLoop, ExpertGemmPath::kCublasStreams,
                                ExpertGemmPath::kCublasBatched, ExpertGemmPath::kAuto}) {
      gpu_->set_path(path);
      for (int64_t tokens : {1, 3, 17, 70, 300}) {
        for (int64_t layer : {1, 3}) {
          EXPECT_LT(Compare(layer, tokens, 4), kBf16Tolerance)
              << "hidden " << s.hidden << " intermediate " << s.intermediate << " path " << int(path) << " tokens "
              << tokens << " layer " << layer;
        }
      }
    }
  }
}

// Skewed routing (expert 0 on every token, expert 1 on half, the rest rarely): the batched path
// pads per bucket of similar row counts, so several buckets run, each with its own row count
// (planned at several bucket costs); FP8 also with one dequantized expert per group (groups
// restart in each bucket).
TEST_F(CudaExpertsTest, BatchedPathWithSkewedRoutingMatchesCpuInEveryBucketing) {
  for (GpuExpertFormat format : {GpuExpertFormat::kBF16, GpuExpertFormat::kFP8Block}) {
    Build(Shape{256, 128, 8}, format);
    gpu_->set_path(ExpertGemmPath::kCublasBatched);
    Batch b;
    b.tokens = 200;
    b.top_k = 3;
    b.activations = RandomVector(b.tokens * shape_.hidden, rng_, 1.0f);
    std::uniform_real_distribution<float> weight(0.05f, 1.0f);
    std::uniform_int_distribution<int32_t> cold(2, 7);
    for (int64_t t = 0; t < b.tokens; ++t) {
      const int32_t third = cold(rng_);
      int32_t second = t % 2 == 0 ? 1 : cold(rng_);
      if (second == third) second = -1;  // distinct experts per token; an empty slot instead
      for (int32_t e : {0, second, third}) {
        b.ids.push_back(e);
        b.weights.push_back(weight(rng_));
      }
    }
    for (int buckets : {1, 2, 4}) {
      gpu_->set_batched_row_buckets(buckets);
      // Buckets free (one per distinct count; weights never the bound at this size), cheap, and at
      // the default cost.
      for (double overhead_us : {0.0, 0.01, RowBucketModel{}.bucket_overhead_us}) {
        gpu_->set_row_bucket_model(RowBucketModel{overhead_us, 640, 1e9});
        for (int64_t group_bytes : {int64_t(1) << 30, int64_t(1)}) {
          gpu_->set_fp8_dequantize_bytes(group_bytes);
          EXPECT_LT(CompareBatch(1, b), kBf16Tolerance) << "format " << int(format) << " buckets " << buckets
                                                        << " overhead " << overhead_us << " group bytes " << group_bytes;
        }
      }
    }
    gpu_->set_batched_row_buckets(4);
    gpu_->set_row_bucket_model({});
    gpu_->set_fp8_dequantize_bytes(int64_t(1) << 30);
  }
}

TEST_F(CudaExpertsTest, Fp8BlockScaledMatchesCpuOnDequantizedWeights) {
  for (const Shape& s : {Shape{64, 32, 8}, Shape{320, 136, 8}}) {
    Build(s, GpuExpertFormat::kFP8Block);
    // kCublasBatched dequantizes groups of experts: all at once, then one expert per group.
    for (ExpertGemmPath path : {ExpertGemmPath::kDirect, ExpertGemmPath::kCublasLoop, ExpertGemmPath::kCublasStreams,
                                ExpertGemmPath::kCublasBatched, ExpertGemmPath::kAuto}) {
      gpu_->set_path(path);
      for (int64_t group_bytes : {int64_t(1) << 30, int64_t(1)}) {
        gpu_->set_fp8_dequantize_bytes(group_bytes);
        for (int64_t tokens : {1, 9, 130}) {
          EXPECT_LT(Compare(1, tokens, 3), kBf16Tolerance) << "hidden " << s.hidden << " path " << int(path)
                                                           << " group bytes " << group_bytes << " tokens " << tokens;
        }
      }
    }
    gpu_->set_fp8_dequantize_bytes(int64_t(1) << 30);
    EXPECT_EQ(gpu_->DeviceWeightBytes(), static_cast<uint64_t>(10 * 3 * s.hidden * s.intermediate) +
                                             10 * 4 * (2 * ((s.intermediate + 127) / 128) * ((s.hidden + 127) / 128) +
                                                       ((s.hidden + 127) / 128) * ((s.intermediate + 127) / 128)));
  }
}

// The tensor-core path with the compact grid (only experts with rows; split-k 1, 2 or 4 here;
// weights through the cp.async rings or register loads) and with the phase-1 grid (every local
// expert, 8-way split-k), bf16 and FP8, on a shape large
// enough for the split choice to vary with the token count.
TEST_F(CudaExpertsTest, CompactAndPhase1ExpertGridsMatchCpu) {
  for (GpuExpertFormat format : {GpuExpertFormat::kBF16, GpuExpertFormat::kFP8Block}) {
    Build(Shape{1024, 512, 16}, format);
    gpu_->set_path(ExpertGemmPath::kDirect);
    for (int variant = 0; variant < 3; ++variant) {  // compact + ring, compact + registers, phase-1 grid
      const bool compact = variant < 2, ring = variant == 0;
      gpu_->set_compact_expert_grid(compact);
      gpu_->set_weight_ring(ring);
      for (int64_t tokens : {1, 5, 40}) {
        for (int64_t layer : {1, 3}) {
          EXPECT_LT(Compare(layer, tokens, 4), kBf16Tolerance) << "format " << int(format) << " variant " << variant
                                                               << " tokens " << tokens << " layer " << layer;
        }
      }
    }
    gpu_->set_weight_ring(true);
  }
}

TEST_F(CudaExpertsTest, Float32StorageMatchesCpuClosely) {
  Build(Shape{64, 32, 8}, GpuExpertFormat::kF32);
  for (int64_t tokens : {1, 40}) EXPECT_LT(Compare(1, tokens, 4), kF32Tolerance) << tokens;
}

TEST_F(CudaExpertsTest, ManySlotsPerPermutationThread) {
  Build(Shape{64, 32, 8}, GpuExpertFormat::kBF16);
  gpu_->set_path(ExpertGemmPath::kAuto);
  // 12000 slots: many per permutation thread (with 8 per step, one partial step).
  EXPECT_LT(Compare(1, 3000, 4), kBf16Tolerance);
  // Every id names a held expert: no slot is flagged.
  EXPECT_TRUE(gpu_->DeviceErrors(nullptr).ok());
}

TEST_F(CudaExpertsTest, Fp8BytesIntoBf16StorageAreDequantizedOnUpload) {
  Shape s{64, 32, 4};
  auto gpu = CudaRoutedExperts::Create({s.hidden, s.intermediate, s.experts, GpuExpertFormat::kBF16});
  ASSERT_TRUE(gpu.ok());
  LocalRoutedExperts cpu(s.hidden, s.intermediate);
  for (int32_t e = 0; e < s.experts; ++e) {
    MlpWeights mlp = RandomMlp(s, rng_);
    auto gate = QuantizeFp8Block(mlp.gate_proj), up = QuantizeFp8Block(mlp.up_proj), down = QuantizeFp8Block(mlp.down_proj);
    ASSERT_TRUE((*gpu)->SetExpertFromBytes(0, e, {DType::kF8E4M3, AsBytes(gate.values), AsBytes(up.values),
                                                  AsBytes(down.values), AsBytes(gate.scale_inv), AsBytes(up.scale_inv),
                                                  AsBytes(down.scale_inv)}).ok());
    ASSERT_TRUE(cpu.AddExpert(0, e, {gate.dequantized, up.dequantized, down.dequantized}).ok());
  }
  Batch b = RandomBatch(5, 2, {0, 1, 2, 3}, s.hidden, rng_);
  std::vector<float> expected(5 * s.hidden, 0.0f), actual(5 * s.hidden, 0.0f);
  ASSERT_TRUE(cpu.Compute(b.View(0, s.hidden), expected).ok());
  ASSERT_TRUE((*gpu)->Compute(b.View(0, s.hidden), actual).ok());
  EXPECT_LT(RelativeNormError(actual, expected), kBf16Tolerance);
}

TEST_F(CudaExpertsTest, ErrorsAreReportedNotCrashed) {
  Build(Shape{64, 32, 8}, GpuExpertFormat::kBF16);
  Batch b = RandomBatch(4, 2, {2, 5}, 64, rng_);
  std::vector<float> out(4 * 64, 0.0f);
  b.ids[1] = 6;  // layer 3 holds only experts 2 and 5
  EXPECT_EQ(gpu_->Compute(b.View(3, 64), out).code(), absl::StatusCode::kNotFound);
  gpu_->set_path(ExpertGemmPath::kCublasBatched);  // the permutation flags it too
  EXPECT_EQ(gpu_->Compute(b.View(3, 64), out).code(), absl::StatusCode::kNotFound);
  gpu_->set_path(ExpertGemmPath::kAuto);
  b.ids[1] = 2;
  b.weights[2] = std::nanf("");
  EXPECT_EQ(gpu_->Compute(b.View(3, 64), out).code(), absl::StatusCode::kInvalidArgument);
  b.weights[2] = 0.5f;
  EXPECT_EQ(gpu_->Compute(b.View(3, 48), out).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> short_out(10);
  EXPECT_EQ(gpu_->Compute(b.View(3, 64), short_out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_->Compute(b.View(7, 64), out).code(), absl::StatusCode::kNotFound);  // unknown layer
  // Wrong byte counts on upload.
  std::vector<float> small(10);
  EXPECT_EQ(gpu_->SetExpertFromBytes(1, 0, {DType::kF32, AsBytes(small), AsBytes(small), AsBytes(small), {}, {}, {}})
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_->SetExpert(1, 99, RandomMlp(shape_, rng_)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(gpu_->Compute(b.View(3, 64), out).ok());
}

// Raw checkpoint bytes are uploaded unconverted, so NaN/inf codes and bad FP8 block scales are
// caught on the host: DATA_LOSS naming the tensor and element, nothing uploaded (the expert keeps
// its previous weights and still matches the CPU reference).
TEST_F(CudaExpertsTest, NonFiniteWeightBytesAreDataLossAndLeaveTheExpertAsItWas) {
  Build(Shape{64, 32, 8}, GpuExpertFormat::kFP8Block);
  MlpWeights mlp = RandomMlp(shape_, rng_);
  auto gate = QuantizeFp8Block(mlp.gate_proj), up = QuantizeFp8Block(mlp.up_proj), down = QuantizeFp8Block(mlp.down_proj);
  auto upload = [&] {
    return gpu_->SetExpertFromBytes(1, 0, {DType::kF8E4M3, AsBytes(gate.values), AsBytes(up.values),
                                           AsBytes(down.values), AsBytes(gate.scale_inv), AsBytes(up.scale_inv),
                                           AsBytes(down.scale_inv)});
  };
  up.values[17] = 0xff;  // E4M3 NaN
  absl::Status status = upload();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find("layer 1 expert 0: up_proj element 17"), std::string::npos) << status;
  up.values[17] = 0x38;
  down.scale_inv[0] = -1.0f;
  status = upload();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find("down_proj_scale_inv block 0"), std::string::npos) << status;
  down.scale_inv[0] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(upload().code(), absl::StatusCode::kDataLoss);
  gpu_->set_path(ExpertGemmPath::kAuto);
  EXPECT_LT(Compare(1, 3, 2), kBf16Tolerance);  // expert 0 of layer 1 still holds Build's weights
  // bf16 bytes into bf16 storage go up unconverted too.
  Build(Shape{64, 32, 8}, GpuExpertFormat::kBF16);
  std::vector<uint16_t> gate16(shape_.intermediate * shape_.hidden, 0x3f80), up16 = gate16,
      down16(shape_.hidden * shape_.intermediate, 0x3f80);
  down16.back() = 0x7f80;  // +inf
  status = gpu_->SetExpertFromBytes(1, 0, {DType::kBF16, AsBytes(gate16), AsBytes(up16), AsBytes(down16), {}, {}, {}});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find("down_proj element " + std::to_string(down16.size() - 1)), std::string::npos)
      << status;
  EXPECT_LT(Compare(1, 3, 2), kBf16Tolerance);
}

TEST_F(CudaExpertsTest, DeviceBatchRecordsExpertsNotHeld) {
  Build(Shape{64, 32, 8}, GpuExpertFormat::kBF16);
  const int64_t tokens = 3, top_k = 2, hidden = 64;
  std::vector<int32_t> ids = {2, 5, 5, 7, -1, 2};  // 7 is not held in layer 3
  std::vector<float> weights = {0.5f, 0.5f, 1.0f, 1.0f, 0.3f, 0.7f};
  std::vector<float> x = RandomVector(tokens * hidden, rng_, 1.0f);
  DeviceBatchBuffers device;
  ASSERT_NO_FATAL_FAILURE(device.Upload(x, ids, weights));
  DeviceExpertBatch batch{3, tokens, top_k, device.x.as<float>(), device.ids.as<int32_t>(),
                          device.weights.as<float>(), device.out.as<float>(), false};
  ASSERT_TRUE(gpu_->ComputeOnDevice(batch, nullptr).ok());
  EXPECT_EQ(gpu_->DeviceErrors(nullptr).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(gpu_->DeviceErrors(nullptr).ok());  // the flag was reset
  // The slots that were held were computed: token 0 = 0.5 E2(x0) + 0.5 E5(x0) as on the CPU.
  std::vector<float> out(x.size());
  ASSERT_TRUE(device.out.CopyToHost(out.data(), out.size() * 4).ok());
  RoutedExpertBatch first{3, 1, hidden, top_k, std::span(x.data(), hidden), std::span(ids.data(), 2),
                          std::span(weights.data(), 2)};
  std::vector<float> expected(hidden, 0.0f);
  ASSERT_TRUE(cpu_->Compute(first, expected).ok());
  EXPECT_LT(RelativeNormError(std::span(out.data(), hidden), expected), kBf16Tolerance);
}

// The few-token kernels (1-4 tokens, no permutation: every block decodes the routing itself),
// bf16 and FP8, top-k 1 to 8, a layer holding every expert and one holding two (most slots then
// name experts elsewhere, as in a fan-out), with and without the programmatic launch of the down
// kernel. The host API starts the device output from zero and adds it on the host.
TEST_F(CudaExpertsTest, FewTokenKernelsMatchCpu) {
  for (GpuExpertFormat format : {GpuExpertFormat::kBF16, GpuExpertFormat::kFP8Block}) {
    for (const Shape& s : {Shape{64, 32, 8}, Shape{320, 144, 8}, Shape{1024, 512, 16}, Shape{128, 2304, 8}}) {
      Build(s, format);
      gpu_->set_path(ExpertGemmPath::kFewTokens);
      for (bool programmatic : {true, false}) {
        gpu_->set_programmatic_launch(programmatic);
        for (int64_t tokens = 1; tokens <= 4; ++tokens) {
          for (int64_t top_k : {1, 3, 8}) {
            for (int64_t layer : {1, 3}) {
              EXPECT_LT(Compare(layer, tokens, top_k), kBf16Tolerance)
                  << "format " << int(format) << " hidden " << s.hidden << " programmatic " << programmatic
                  << " tokens " << tokens << " top_k " << top_k << " layer " << layer;
            }
          }
        }
      }
    }
  }
}

// Each weight row read by one warp, or split across two warps of a block (each reading half a row,
// the first adding the partial sums) in both kernels; the test above runs the default (0: split
// where the rows are few, which at these sizes means everywhere).
TEST_F(CudaExpertsTest, FewTokenRowsOnOneOrTwoWarpsMatchCpu) {
  for (GpuExpertFormat format : {GpuExpertFormat::kBF16, GpuExpertFormat::kFP8Block}) {
    for (const Shape& s : {Shape{64, 32, 8}, Shape{320, 144, 8}, Shape{1024, 512, 16}, Shape{128, 2304, 8}}) {
      Build(s, format);
      gpu_->set_path(ExpertGemmPath::kFewTokens);
      for (int warps_per_row : {1, 2}) {
        gpu_->set_few_token_warps_per_row(warps_per_row);
        for (int64_t tokens : {1, 4}) {
          for (int64_t layer : {1, 3}) {
            EXPECT_LT(Compare(layer, tokens, 3), kBf16Tolerance) << "format " << int(format) << " hidden " << s.hidden
                                                                << " warps per row " << warps_per_row << " tokens "
                                                                << tokens << " layer " << layer;
          }
        }
      }
    }
  }
}

// Asked for explicitly, the few-token path refuses what it cannot take; kAuto then falls back.
TEST_F(CudaExpertsTest, FewTokenPathRefusesWhatItCannotTake) {
  Build(Shape{64, 32, 8}, GpuExpertFormat::kBF16);
  gpu_->set_path(ExpertGemmPath::kFewTokens);
  Batch five = RandomBatch(5, 2, {0, 1, 2, 3}, 64, rng_);
  std::vector<float> out(5 * 64, 0.0f);
  EXPECT_EQ(gpu_->Compute(five.View(1, 64), out).code(), absl::StatusCode::kFailedPrecondition);
  Batch wide = RandomBatch(1, 17, {0, 1, 2, 3, 4, 5, 6, 7}, 64, rng_);  // top_k above 16
  EXPECT_EQ(gpu_->Compute(wide.View(1, 64), std::span(out.data(), 64)).code(), absl::StatusCode::kFailedPrecondition);
  gpu_->set_few_token_warps_per_row(3);  // not 0, 1 or 2
  Batch fits = RandomBatch(1, 2, {0, 1, 2, 3}, 64, rng_);
  EXPECT_EQ(gpu_->Compute(fits.View(1, 64), std::span(out.data(), 64)).code(), absl::StatusCode::kInvalidArgument);
  // FP8 rows of 136 bytes are not whole 16-value pieces.
  Build(Shape{320, 136, 8}, GpuExpertFormat::kFP8Block);
  gpu_->set_path(ExpertGemmPath::kFewTokens);
  Batch one = RandomBatch(1, 2, {0, 1, 2, 3}, 320, rng_);
  std::vector<float> row(320, 0.0f);
  EXPECT_EQ(gpu_->Compute(one.View(1, 320), row).code(), absl::StatusCode::kFailedPrecondition);
  gpu_->set_path(ExpertGemmPath::kAuto);
  EXPECT_LT(Compare(1, 2, 3), kBf16Tolerance);
}

// Device batches: a token naming one expert twice (both gate weights count), accumulation into
// the output, and the same batch captured in a CUDA graph (with the programmatic launch edge)
// and replayed twice.
TEST_F(CudaExpertsTest, FewTokenDeviceBatchAccumulatesAndReplaysInAGraph) {
  for (GpuExpertFormat format : {GpuExpertFormat::kBF16, GpuExpertFormat::kFP8Block}) {
    Build(Shape{256, 96, 16}, format);
    const int64_t tokens = 3, top_k = 3, hidden = 256;
    const std::vector<int32_t> ids = {2, 2, 5, 7, -1, 3, 1, 4, 1};
    const std::vector<float> weights = {0.5f, 0.25f, 0.75f, 1.0f, 0.3f, 0.6f, 0.2f, 0.9f, 0.4f};
    const std::vector<float> x = RandomVector(tokens * hidden, rng_, 1.0f);
    const std::vector<float> base = RandomVector(tokens * hidden, rng_, 1.0f);
    std::vector<float> once = base;
    RoutedExpertBatch host{1, tokens, hidden, top_k, x, ids, weights};
    ASSERT_TRUE(cpu_->Compute(host, once).ok());
    std::vector<float> twice = once;
    for (size_t i = 0; i < twice.size(); ++i) twice[i] += once[i] - base[i];
    DeviceBatchBuffers device;
    ASSERT_NO_FATAL_FAILURE(device.Upload(x, ids, weights));
    ASSERT_TRUE(device.out.CopyFromHost(base.data(), base.size() * 4).ok());
    DeviceExpertBatch batch{1, tokens, top_k, device.x.as<float>(), device.ids.as<int32_t>(),
                            device.weights.as<float>(), device.out.as<float>(), /*accumulate=*/true};
    gpu_->set_path(ExpertGemmPath::kAuto);  // 3 tokens: the few-token kernels
    gpu_->set_few_token_max_tokens(4);
    ASSERT_TRUE(gpu_->ComputeOnDevice(batch, nullptr).ok());
    ASSERT_TRUE(gpu_->DeviceErrors(nullptr).ok());
    std::vector<float> out(x.size());
    ASSERT_TRUE(device.out.CopyToHost(out.data(), out.size() * 4).ok());
    EXPECT_LT(RelativeNormError(out, once), kBf16Tolerance) << "format " << int(format);

    ASSERT_TRUE(device.out.CopyFromHost(base.data(), base.size() * 4).ok());
    ASSERT_TRUE(gpu_->Reserve(tokens, top_k).ok());
    cudaStream_t stream = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    batch.capturable = true;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    const absl::Status captured = gpu_->ComputeOnDevice(batch, stream);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_TRUE(captured.ok()) << captured;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_TRUE(gpu_->DeviceErrors(stream).ok());
    ASSERT_TRUE(device.out.CopyToHost(out.data(), out.size() * 4).ok());
    EXPECT_LT(RelativeNormError(out, twice), kBf16Tolerance) << "format " << int(format);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

}  // namespace
}  // namespace expertmesh
