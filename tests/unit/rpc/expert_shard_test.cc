// ExpertShard request validation and reply assembly. The experts here are a small in-test
// RoutedExperts whose output is a known function of (expert id, activation) so the weighted sum
// the shard returns can be checked exactly; the real experts are covered by the model tests.
#include "expert-svc/expert_shard.h"

#include <cmath>

#include <gtest/gtest.h>

#include "engine/rpc/tensor_payload.h"

namespace expertmesh::expert_service {
namespace {

// Expert e maps x to (e + 1) * x.
class ScalingExperts : public RoutedExperts {
 public:
  absl::Status Compute(const RoutedExpertBatch& batch, std::span<float> output) override {
    for (int64_t t = 0; t < batch.num_tokens; ++t) {
      for (int64_t k = 0; k < batch.top_k; ++k) {
        const int32_t expert = batch.expert_ids[t * batch.top_k + k];
        if (expert < 0) continue;
        const float weight = batch.gate_weights[t * batch.top_k + k];
        for (int64_t h = 0; h < batch.hidden_size; ++h) {
          output[t * batch.hidden_size + h] += weight * (expert + 1) * batch.activations[t * batch.hidden_size + h];
        }
      }
    }
    return absl::OkStatus();
  }
};

class ExpertShardTest : public ::testing::Test {
 protected:
  ExpertShardTest()
      : shard_("shard-0", ShardModelInfo{"deepseek_v3", 4, 8, "f32", "cpu", 0, 65536, 64ull << 20, "base", 1}, HostedExperts{{1, {0, 1, 2, 3}}, {2, {0, 1, 2, 3}}},
               std::make_unique<ScalingExperts>()) {}

  v1::ExpertRequest ValidRequest() {
    v1::ExpertRequest request;
    request.set_request_id(7);
    request.set_layer(1);
    request.set_num_tokens(2);
    request.set_hidden_size(4);
    request.set_slots_per_token(2);
    request.set_dtype(v1::TENSOR_DTYPE_F32);
    const std::vector<float> activations = {1, 2, 3, 4, -1, -2, -3, -4};
    EXPECT_TRUE(rpc::EncodeTensor(activations, v1::TENSOR_DTYPE_F32, request.mutable_activations()).ok());
    for (int id : {0, 3, 2, -1}) request.add_expert_ids(id);
    for (float weight : {0.5f, 0.25f, 1.0f, 0.0f}) request.add_gate_weights(weight);
    return request;
  }

  void ExpectInvalid(const v1::ExpertRequest& request, const std::string& message_part) {
    v1::ExpertReply reply;
    const absl::Status status = shard_.Handle(request, &reply);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_NE(status.message().find(message_part), std::string::npos) << status;
  }

  ExpertShard shard_;
};

TEST_F(ExpertShardTest, ComputesEachTokensWeightedSum) {
  v1::ExpertReply reply;
  ASSERT_TRUE(shard_.Handle(ValidRequest(), &reply).ok());
  EXPECT_EQ(reply.request_id(), 7u);
  std::vector<float> outputs;
  ASSERT_TRUE(rpc::DecodeTensor(reply.outputs(), reply.dtype(), 8, "outputs", &outputs).ok());
  // token 0: 0.5 * 1x + 0.25 * 4x = 1.5x ; token 1: 1.0 * 3x = 3x
  const std::vector<float> expected = {1.5f, 3.0f, 4.5f, 6.0f, -3.0f, -6.0f, -9.0f, -12.0f};
  EXPECT_EQ(outputs, expected);
}

TEST_F(ExpertShardTest, RejectsBadRequestsWithTheReason) {
  auto request = ValidRequest();
  request.set_layer(0);
  ExpectInvalid(request, "layer 0 is not an MoE layer hosted by shard shard-0");
  request = ValidRequest();
  request.set_hidden_size(5);
  ExpectInvalid(request, "hidden_size 5 does not match the model's 4");
  request = ValidRequest();
  request.set_expert_ids(1, 6);
  ExpectInvalid(request, "expert 6 of layer 1 is not hosted by shard shard-0");
  request = ValidRequest();
  request.add_gate_weights(1.0f);
  ExpectInvalid(request, "expected 4 expert_ids and gate_weights");
  request = ValidRequest();
  request.set_gate_weights(0, std::nanf(""));
  ExpectInvalid(request, "gate weight 0 is not finite");
  request = ValidRequest();
  request.mutable_activations()->resize(30);
  ExpectInvalid(request, "activations: expected 8 values (32 bytes), got 30 bytes");
  request = ValidRequest();
  request.set_num_tokens(0);
  ExpectInvalid(request, "num_tokens must be >= 1");
  request = ValidRequest();
  request.set_slots_per_token(9);
  ExpectInvalid(request, "slots_per_token must be in [1, 8]");
  request = ValidRequest();
  request.set_dtype(v1::TENSOR_DTYPE_UNSPECIFIED);
  ExpectInvalid(request, "dtype must be TENSOR_DTYPE_F32 or TENSOR_DTYPE_BF16, got TENSOR_DTYPE_UNSPECIFIED");
  request = ValidRequest();
  request.set_num_tokens(70000);
  ExpectInvalid(request, "num_tokens 70000 exceeds the limit of 65536 per request");
}

TEST_F(ExpertShardTest, ChecksTheWeightSet) {
  v1::ExpertReply reply;
  auto request = ValidRequest();
  request.set_weight_set("base");
  ASSERT_TRUE(shard_.Handle(request, &reply).ok());
  EXPECT_EQ(reply.weight_set(), "base");
  EXPECT_EQ(reply.weight_set_version(), 1u);
  request.set_weight_set("blend-a");
  absl::Status status = shard_.Handle(request, &reply);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_NE(status.message().find("weight set 'blend-a' is not resident on shard shard-0"), std::string::npos);
  request = ValidRequest();
  request.set_weight_set_version(2);
  status = shard_.Handle(request, &reply);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
}

TEST_F(ExpertShardTest, Bf16PayloadsRoundTrip) {
  auto request = ValidRequest();
  request.set_dtype(v1::TENSOR_DTYPE_BF16);
  const std::vector<float> activations = {1, 2, 3, 4, -1, -2, -3, -4};  // exact in bf16
  ASSERT_TRUE(rpc::EncodeTensor(activations, v1::TENSOR_DTYPE_BF16, request.mutable_activations()).ok());
  v1::ExpertReply reply;
  ASSERT_TRUE(shard_.Handle(request, &reply).ok());
  EXPECT_EQ(reply.dtype(), v1::TENSOR_DTYPE_BF16);
  EXPECT_EQ(reply.outputs().size(), 16u);
  std::vector<float> outputs;
  ASSERT_TRUE(rpc::DecodeTensor(reply.outputs(), reply.dtype(), 8, "outputs", &outputs).ok());
  EXPECT_EQ(outputs, (std::vector<float>{1.5f, 3.0f, 4.5f, 6.0f, -3.0f, -6.0f, -9.0f, -12.0f}));
}

TEST(ExpertSpecTest, ParsesRangesPerModelOrPerLayer) {
  ModelConfig config;
  config.num_hidden_layers = 4;
  config.first_k_dense_replace = 1;
  config.n_routed_experts = 16;
  auto all_layers = ParseExpertSpec("0-3, 9", config);
  ASSERT_TRUE(all_layers.ok()) << all_layers.status();
  EXPECT_EQ(all_layers->size(), 3u);
  EXPECT_EQ(all_layers->at(2), (std::set<int32_t>{0, 1, 2, 3, 9}));
  auto per_layer = ParseExpertSpec("1:0-1;3:15", config);
  ASSERT_TRUE(per_layer.ok()) << per_layer.status();
  EXPECT_EQ(per_layer->size(), 2u);
  EXPECT_EQ(per_layer->at(3), (std::set<int32_t>{15}));
  EXPECT_NE(ParseExpertSpec("0-16", config).status().message().find("expert 16 out of range"), std::string::npos);
  EXPECT_NE(ParseExpertSpec("0:1", config).status().message().find("layer 0 is not an MoE layer"), std::string::npos);
  EXPECT_NE(ParseExpertSpec("5-2", config).status().message().find("bad expert range '5-2'"), std::string::npos);
  EXPECT_NE(ParseExpertSpec("x", config).status().message().find("bad expert range 'x'"), std::string::npos);
  EXPECT_EQ(ShardRangeForModel(config, 1, 2).at(1), (std::set<int32_t>{8, 9, 10, 11, 12, 13, 14, 15}));
}

TEST_F(ExpertShardTest, DescribeListsHostedExperts) {
  const auto description = shard_.Describe();
  EXPECT_EQ(description.shard_name(), "shard-0");
  ASSERT_EQ(description.layers_size(), 2);
  EXPECT_EQ(description.layers(1).layer(), 2u);
  EXPECT_EQ(description.layers(1).expert_ids_size(), 4);
}

TEST(ExpertRangeTest, SplitsContiguouslyAndCoversEveryExpert) {
  std::set<int32_t> all;
  for (int shard = 0; shard < 3; ++shard) {
    for (int32_t expert : ExpertRangeForShard(8, shard, 3)) EXPECT_TRUE(all.insert(expert).second);
  }
  EXPECT_EQ(all.size(), 8u);
  EXPECT_EQ(ExpertRangeForShard(8, 1, 2), (std::set<int32_t>{4, 5, 6, 7}));
}

}  // namespace
}  // namespace expertmesh::expert_service
