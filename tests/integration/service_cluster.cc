// ServiceCluster start-up, restarts and the Generate client.
#include "tests/integration/service_cluster.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace expertmesh::testing {

std::vector<std::string> ServiceCluster::ShardArguments(int index) const {
  std::vector<std::string> arguments = {absl::StrCat("--model=", options_.model_directory),
                                        absl::StrCat("--shard-index=", index),
                                        absl::StrCat("--num-shards=", options_.num_shards)};
  arguments.insert(arguments.end(), options_.expert_flags.begin(), options_.expert_flags.end());
  if (index < static_cast<int>(options_.shard_flags.size())) {
    const std::vector<std::string>& own = options_.shard_flags[index];
    arguments.insert(arguments.end(), own.begin(), own.end());
  }
  return arguments;
}

absl::StatusOr<std::unique_ptr<ServiceCluster>> ServiceCluster::Start(const ClusterOptions& options) {
  auto cluster = std::unique_ptr<ServiceCluster>(new ServiceCluster());
  cluster->options_ = options;
  cluster->shards_.resize(options.num_shards);
  for (int index = 0; index < options.num_shards; ++index) {
    for (int replica = 0; replica < options.replicas_per_shard; ++replica) {
      auto process = ServiceProcess::Start(absl::StrCat("expert-svc-", index, "-", replica), BinaryPath("expert-svc"),
                                           cluster->ShardArguments(index));
      if (!process.ok()) return process.status();
      cluster->shards_[index].push_back(*std::move(process));
    }
  }
  if (options.start_attention) {
    if (absl::Status started = cluster->StartAttention(); !started.ok()) return started;
  }
  return cluster;
}

std::vector<std::string> ServiceCluster::shard_addresses() const {
  std::vector<std::string> addresses;
  for (const auto& replicas : shards_) {
    for (const auto& process : replicas) addresses.push_back(process->address());
  }
  return addresses;
}

absl::Status ServiceCluster::RestartShard(int index, int replica) {
  auto& slot = shards_[index][replica];
  const int port = slot->port();
  slot->Kill();
  auto process = ServiceProcess::Start(absl::StrCat("expert-svc-", index, "-", replica, "-restarted"),
                                       BinaryPath("expert-svc"), ShardArguments(index), std::chrono::seconds(60), port);
  if (!process.ok()) return process.status();
  slot = *std::move(process);
  return absl::OkStatus();
}

absl::Status ServiceCluster::StartAttention(const std::vector<std::string>& extra_flags) {
  attention_.reset();
  std::vector<std::string> arguments = {absl::StrCat("--model=", options_.model_directory),
                                        absl::StrCat("--expert-shards=", absl::StrJoin(shard_addresses(), ","))};
  arguments.insert(arguments.end(), options_.attention_flags.begin(), options_.attention_flags.end());
  arguments.insert(arguments.end(), extra_flags.begin(), extra_flags.end());
  auto process = ServiceProcess::Start("attention-svc", BinaryPath("attention-svc"), arguments);
  if (!process.ok()) return process.status();
  attention_ = *std::move(process);
  channel_ = grpc::CreateChannel(attention_->address(), grpc::InsecureChannelCredentials());
  stub_ = v1::AttentionService::NewStub(channel_);
  return absl::OkStatus();
}

GenerationOutput RunGenerate(v1::AttentionService::Stub& stub, const v1::SequenceRequest& request,
                             std::chrono::milliseconds timeout) {
  GenerationOutput output;
  const auto start = std::chrono::steady_clock::now();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  auto reader = stub.Generate(&context, request);
  v1::SequenceEvent event;
  while (reader->Read(&event)) {
    if (event.has_token()) {
      output.tokens.push_back(event.token().token_id());
      const std::string& bytes = event.token().logits();
      std::vector<float> logits(bytes.size() / sizeof(float));
      std::memcpy(logits.data(), bytes.data(), logits.size() * sizeof(float));
      output.logits.push_back(std::move(logits));
    } else if (event.has_usage()) {
      output.has_usage = true;
      output.usage = event.usage();
    }
  }
  output.status = reader->Finish();
  output.elapsed = std::chrono::steady_clock::now() - start;
  return output;
}

v1::SequenceRequest MakeRequest(std::vector<int32_t> prompt, uint32_t max_tokens, bool include_logits) {
  v1::SequenceRequest request;
  for (int32_t id : prompt) request.add_prompt_ids(id);
  request.set_max_tokens(max_tokens);
  request.set_include_logits(include_logits);
  return request;
}

std::vector<v1::SequenceRequest> EquivalenceRequests(int64_t vocab) {
  std::vector<v1::SequenceRequest> requests;
  for (int length : {1, 5, 12}) {
    std::vector<int32_t> prompt;
    for (int i = 0; i < length; ++i) prompt.push_back(static_cast<int32_t>((37 * i + 11 * length + 3) % vocab));
    requests.push_back(MakeRequest(prompt, 10));
  }
  v1::SequenceRequest sampled = MakeRequest({5, 80, 13, static_cast<int32_t>(200 % vocab)}, 10);
  sampled.mutable_sampling()->set_temperature(0.9f);
  sampled.mutable_sampling()->set_top_p(0.8f);
  sampled.mutable_sampling()->set_seed(42);
  requests.push_back(sampled);
  return requests;
}

}  // namespace expertmesh::testing
