// Bad input to every RPC of the real services gets the right code and a message that says why:
// AttentionService.Generate (prompts, lengths, sampling, stop ids, blends), ExpertService.Compute
// (sizes, layers, experts, NaN, dtype, oversize, weight sets, timeouts — per message, the stream
// stays usable), and start-up (expert placement with a missing expert, bad shard flags).
#include <cmath>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "engine/rpc/tensor_payload.h"
#include "expertmesh/v1/expert_service.grpc.pb.h"
#include "tests/integration/service_cluster.h"

namespace expertmesh::testing {
namespace {

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClusterOptions options;
    options.model_directory = SourcePath("tests/fixtures/v3_tiny");  // vocab 256, 128 positions, hidden 64
    options.num_shards = 2;
    options.expert_flags = {"--max-message-mb=1"};
    options.attention_flags = {"--max-prompt-tokens=64"};
    auto started = ServiceCluster::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    cluster_ = std::move(started).value().release();
  }
  static void TearDownTestSuite() { delete cluster_; }

  static void ExpectGenerateError(const v1::SequenceRequest& request, grpc::StatusCode code, const std::string& part) {
    const GenerationOutput output = RunGenerate(cluster_->stub(), request);
    EXPECT_EQ(output.status.error_code(), code) << output.status.error_message();
    EXPECT_NE(output.status.error_message().find(part), std::string::npos) << output.status.error_message();
    EXPECT_TRUE(output.tokens.empty());
  }

  static ServiceCluster* cluster_;
};
ServiceCluster* BadInput::cluster_ = nullptr;

TEST_F(BadInput, GenerateRejectsBadRequests) {
  using grpc::StatusCode;
  ExpectGenerateError(MakeRequest({}, 4), StatusCode::INVALID_ARGUMENT, "prompt_ids is empty");
  ExpectGenerateError(MakeRequest({1, 256}, 4), StatusCode::INVALID_ARGUMENT,
                      "prompt_ids[1] = 256 is outside the vocabulary [0, 256)");
  ExpectGenerateError(MakeRequest({-3}, 4), StatusCode::INVALID_ARGUMENT, "prompt_ids[0] = -3");
  ExpectGenerateError(MakeRequest(std::vector<int32_t>(65, 7), 4), StatusCode::INVALID_ARGUMENT,
                      "prompt has 65 tokens; the limit is 64");
  ExpectGenerateError(MakeRequest(std::vector<int32_t>(60, 7), 69), StatusCode::INVALID_ARGUMENT,
                      "prompt (60 tokens) + max_tokens (69) exceeds the model's context of 128 positions");
  ExpectGenerateError(MakeRequest({5}, 0), StatusCode::INVALID_ARGUMENT, "max_tokens must be >= 1");
  v1::SequenceRequest request = MakeRequest({5}, 4);
  request.mutable_sampling()->set_temperature(-1.0f);
  ExpectGenerateError(request, StatusCode::INVALID_ARGUMENT, "sampling: temperature");
  request.mutable_sampling()->set_temperature(std::nanf(""));
  ExpectGenerateError(request, StatusCode::INVALID_ARGUMENT, "sampling: temperature");
  request = MakeRequest({5}, 4);
  request.mutable_sampling()->set_top_p(1.5f);
  ExpectGenerateError(request, StatusCode::INVALID_ARGUMENT, "sampling: top_p must be in (0, 1], got 1.5");
  request = MakeRequest({5}, 4);
  request.add_stop_token_ids(999);
  ExpectGenerateError(request, StatusCode::INVALID_ARGUMENT, "stop_token_ids[0] = 999");
  request = MakeRequest({5}, 4);
  request.set_blend("no-such-blend");
  ExpectGenerateError(request, StatusCode::NOT_FOUND, "blend 'no-such-blend' is not served");
  // The service is unharmed.
  const GenerationOutput fine = RunGenerate(cluster_->stub(), MakeRequest({5, 6, 7}, 3));
  EXPECT_TRUE(fine.status.ok()) << fine.status.error_message();
  EXPECT_FALSE(fine.tokens.empty());
}

TEST_F(BadInput, GenerateHonoursStopTokensAndDescribe) {
  const GenerationOutput first = RunGenerate(cluster_->stub(), MakeRequest({5, 6, 7}, 5));
  ASSERT_TRUE(first.status.ok());
  ASSERT_FALSE(first.tokens.empty());
  v1::SequenceRequest request = MakeRequest({5, 6, 7}, 5);
  request.add_stop_token_ids(first.tokens[0]);
  const GenerationOutput stopped = RunGenerate(cluster_->stub(), request);
  ASSERT_TRUE(stopped.status.ok());
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>{first.tokens[0]});
  EXPECT_EQ(stopped.usage.finish_reason(), v1::FINISH_REASON_STOP);

  grpc::ClientContext context;
  v1::AttentionDescription description;
  ASSERT_TRUE(cluster_->stub().Describe(&context, v1::DescribeAttentionRequest(), &description).ok());
  EXPECT_EQ(description.model_type(), "deepseek_v3");
  EXPECT_EQ(description.vocab_size(), 256u);
  EXPECT_EQ(description.hidden_size(), 64u);
  EXPECT_EQ(description.num_layers(), 3u);
  EXPECT_EQ(description.max_position_embeddings(), 128u);
  EXPECT_EQ(description.expert_shards_size(), 2);
  EXPECT_EQ(description.healthy_expert_shards(), 2u);
  EXPECT_GT(description.resident_weight_bytes(), 0u);
  EXPECT_EQ(description.backend(), "cpu");
}

// A raw Compute stream to shard 0 (experts 0-7 of layers 1 and 2).
class ExpertStream {
 public:
  explicit ExpertStream(const std::string& address) {
    grpc::ChannelArguments arguments;
    arguments.SetMaxSendMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments);
    stub_ = v1::ExpertService::NewStub(channel_);
    stream_ = stub_->Compute(&context_);
  }
  v1::ExpertReply RoundTrip(const v1::ExpertRequest& request) {
    v1::ExpertReply reply;
    EXPECT_TRUE(stream_->Write(request));
    EXPECT_TRUE(stream_->Read(&reply));
    EXPECT_EQ(reply.request_id(), request.request_id());
    return reply;
  }
  grpc::ClientReaderWriter<v1::ExpertRequest, v1::ExpertReply>& stream() { return *stream_; }
  v1::ExpertService::Stub& stub() { return *stub_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ExpertService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ExpertRequest, v1::ExpertReply>> stream_;
};

v1::ExpertRequest ValidExpertRequest(uint64_t id, uint32_t tokens = 2) {
  v1::ExpertRequest request;
  request.set_request_id(id);
  request.set_layer(1);
  request.set_num_tokens(tokens);
  request.set_hidden_size(64);
  request.set_slots_per_token(2);
  request.set_dtype(v1::TENSOR_DTYPE_F32);
  std::vector<float> activations(tokens * 64);
  for (size_t i = 0; i < activations.size(); ++i) activations[i] = std::sin(0.1f * i);
  EXPECT_TRUE(rpc::EncodeTensor(activations, v1::TENSOR_DTYPE_F32, request.mutable_activations()).ok());
  for (uint32_t t = 0; t < tokens; ++t) {
    request.add_expert_ids(t % 8);
    request.add_expert_ids(-1);
    request.add_gate_weights(0.5f);
    request.add_gate_weights(0.0f);
  }
  return request;
}

void ExpectReplyError(const v1::ExpertReply& reply, grpc::StatusCode code, const std::string& part) {
  ASSERT_TRUE(reply.has_error()) << "no error for a bad request";
  EXPECT_EQ(reply.error().code(), code) << reply.error().message();
  EXPECT_NE(reply.error().message().find(part), std::string::npos) << reply.error().message();
  EXPECT_TRUE(reply.outputs().empty());
}

TEST_F(BadInput, ComputeAnswersEachBadMessageAndKeepsTheStream) {
  using grpc::StatusCode;
  ExpertStream stream(cluster_->shard(0).address());
  uint64_t id = 1;
  auto check_valid = [&] {
    const v1::ExpertReply reply = stream.RoundTrip(ValidExpertRequest(id++));
    EXPECT_FALSE(reply.has_error()) << reply.error().message();
    EXPECT_EQ(reply.outputs().size(), 2u * 64 * 4);
    EXPECT_EQ(reply.weight_set(), "v3_tiny");
  };
  check_valid();

  v1::ExpertRequest request = ValidExpertRequest(id++);
  request.set_hidden_size(63);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "hidden_size 63 does not match the model's 64");
  request = ValidExpertRequest(id++);
  request.set_layer(0);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "layer 0 is not an MoE layer hosted");
  request = ValidExpertRequest(id++);
  request.set_layer(9);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "layer 9 is not an MoE layer hosted");
  request = ValidExpertRequest(id++);
  request.set_expert_ids(0, 12);  // hosted by shard 1
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "expert 12 of layer 1 is not hosted");
  request = ValidExpertRequest(id++);
  request.set_expert_ids(0, -7);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "expert -7 of layer 1 is not hosted");
  request = ValidExpertRequest(id++);
  request.mutable_activations()->resize(100);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT,
                   "activations: expected 128 values (512 bytes), got 100 bytes");
  request = ValidExpertRequest(id++);
  const float nan = std::nanf("");
  request.mutable_activations()->replace(20, 4, reinterpret_cast<const char*>(&nan), 4);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "activations: non-finite value at element 5");
  request = ValidExpertRequest(id++);
  request.set_gate_weights(0, std::numeric_limits<float>::infinity());
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "gate weight 0 is not finite");
  request = ValidExpertRequest(id++);
  request.add_expert_ids(3);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "expected 4 expert_ids and gate_weights");
  request = ValidExpertRequest(id++);
  request.set_dtype(v1::TENSOR_DTYPE_UNSPECIFIED);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT,
                   "dtype must be TENSOR_DTYPE_F32 or TENSOR_DTYPE_BF16, got TENSOR_DTYPE_UNSPECIFIED");
  request = ValidExpertRequest(id++);
  request.set_num_tokens(0);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "num_tokens must be >= 1");
  request = ValidExpertRequest(id++);
  request.set_slots_per_token(0);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT, "slots_per_token must be in [1, 16]");
  // Oversize for the shard's --max-message-mb=1 (but under the transport limit): per message.
  request = ValidExpertRequest(id++, 4200);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::INVALID_ARGUMENT,
                   "activations of 1075200 bytes exceed the shard's limit of 1048576 bytes per message");
  request = ValidExpertRequest(id++);
  request.set_weight_set("other-blend");
  ExpectReplyError(stream.RoundTrip(request), StatusCode::NOT_FOUND, "weight set 'other-blend' is not resident");
  request = ValidExpertRequest(id++);
  request.set_weight_set_version(5);
  ExpectReplyError(stream.RoundTrip(request), StatusCode::FAILED_PRECONDITION, "the request pinned version 5");
  request = ValidExpertRequest(id++);
  request.set_timeout_micros(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ExpectReplyError(stream.RoundTrip(request), StatusCode::DEADLINE_EXCEEDED, "timeout of 1 us");
  check_valid();  // the stream survived every bad message
}

TEST_F(BadInput, ComputeStreamBeyondTheTransportLimitIsResourceExhausted) {
  ExpertStream stream(cluster_->shard(0).address());
  // 1 MiB per-message limit -> the transport accepts up to ~2.25 MiB; send 4 MiB of activations.
  v1::ExpertRequest request = ValidExpertRequest(1, 16384);
  stream.stream().Write(request);
  v1::ExpertReply reply;
  EXPECT_FALSE(stream.stream().Read(&reply));
  EXPECT_EQ(stream.stream().Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(BadInput, ExpertDescribeReportsTheShard) {
  ExpertStream stream(cluster_->shard(1).address());
  grpc::ClientContext context;
  v1::ExpertShardDescription description;
  ASSERT_TRUE(stream.stub().Describe(&context, v1::DescribeExpertShardRequest(), &description).ok());
  EXPECT_EQ(description.shard_name(), "shard-1");
  EXPECT_EQ(description.hidden_size(), 64u);
  EXPECT_EQ(description.num_routed_experts(), 16u);
  ASSERT_EQ(description.layers_size(), 2);
  EXPECT_EQ(description.layers(0).layer(), 1u);
  EXPECT_EQ(description.layers(0).expert_ids_size(), 8);
  EXPECT_EQ(description.layers(0).expert_ids(0), 8u);
  EXPECT_EQ(description.weight_dtype(), "f32");
  ASSERT_EQ(description.weight_sets_size(), 1);
  EXPECT_EQ(description.weight_sets(0).name(), "v3_tiny");
  EXPECT_TRUE(description.weight_sets(0).is_default());
  EXPECT_GT(description.resident_weight_bytes(), 0u);
}

TEST_F(BadInput, AttentionStartUpNamesTheMissingExperts) {
  // Only shard 0 (experts 0-7): experts 8-15 of layers 1 and 2 have no shard.
  auto attention = ServiceProcess::Start(
      "attention-svc-missing", BinaryPath("attention-svc"),
      {"--model=" + SourcePath("tests/fixtures/v3_tiny"), "--expert-shards=" + cluster_->shard(0).address()},
      std::chrono::seconds(30));
  ASSERT_FALSE(attention.ok());
  EXPECT_NE(attention.status().message().find("no expert shard hosts expert(s) 8,9,10,11,12,13,14,15 of layer 1"),
            std::string::npos)
      << attention.status();
}

TEST_F(BadInput, ExpertSvcRejectsBadFlags) {
  const std::string model = "--model=" + SourcePath("tests/fixtures/v3_tiny");
  struct Bad {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Bad> cases = {
      {{model, "--shard-index=2", "--num-shards=2"}, "need --shard-index in [0, --num-shards)"},
      {{model, "--experts=0-99"}, "expert 99 out of range: the model has 16 routed experts"},
      {{model, "--experts=0:1-2"}, "layer 0 is not an MoE layer"},
      {{"--model=/nonexistent", "--shard-index=0", "--num-shards=1"}, "/nonexistent"},
  };
  for (const Bad& bad : cases) {
    auto process = ServiceProcess::Start("expert-svc-bad", BinaryPath("expert-svc"), bad.flags, std::chrono::seconds(30));
    ASSERT_FALSE(process.ok());
    EXPECT_NE(process.status().message().find(bad.message), std::string::npos) << process.status();
  }
}

}  // namespace
}  // namespace expertmesh::testing
