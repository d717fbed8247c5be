// BlendCluster start-up, admin clients and the perturbed-checkpoint fixture writer.
#include "tests/integration/blends/blend_cluster.h"

#include <cmath>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/core/dtype.h"
#include "engine/format/checkpoint.h"
#include "engine/merge/safetensors_writer.h"
#include "engine/rpc/admin_token.h"

namespace expertmesh::testing {

ScratchDir::ScratchDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "expertmesh-blends-XXXXXX").string();
  path_ = ::mkdtemp(pattern.data());
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

absl::Status WritePerturbedCopy(const std::filesystem::path& source, const std::filesystem::path& destination,
                                double scale, uint64_t seed) {
  auto checkpoint = Checkpoint::Open(source);
  if (!checkpoint.ok()) return checkpoint.status();
  std::filesystem::create_directories(destination);
  for (const char* file : {"config.json", "generation_config.json", "tokenizer.json"}) {
    if (std::filesystem::exists(source / file)) {
      std::filesystem::copy_file(source / file, destination / file, std::filesystem::copy_options::overwrite_existing);
    }
  }
  std::vector<TensorSpec> specs;
  for (const std::string& name : (*checkpoint)->TensorNames()) {
    const TensorLocation* location = (*checkpoint)->Find(name);
    if (location->dtype != DType::kF32 && location->dtype != DType::kBF16) {
      return absl::UnimplementedError(absl::StrCat("fixture writer: ", name, " is neither f32 nor bf16"));
    }
    specs.push_back({name, location->dtype, location->shape});
  }
  auto writer = ShardedSafetensorsWriter::Create(destination, specs, 1ull << 40);
  if (!writer.ok()) return writer.status();
  std::mt19937_64 random(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (const TensorSpec& spec : specs) {
    auto raw = (*checkpoint)->RawBytes(spec.name);
    if (!raw.ok()) return raw.status();
    if (spec.name.find(".mlp.experts.") == std::string::npos) {
      if (absl::Status written = (*writer)->Write(spec.name, *raw); !written.ok()) return written;
      continue;
    }
    auto values = (*checkpoint)->LoadFloat(spec.name);
    if (!values.ok()) return values.status();
    double squares = 0;
    for (float v : values->values()) squares += static_cast<double>(v) * v;
    const double rms = std::sqrt(squares / std::max<int64_t>(values->size(), 1));
    std::vector<std::byte> bytes(raw->size());
    for (int64_t i = 0; i < values->size(); ++i) {
      const float perturbed = static_cast<float>(values->data()[i] + scale * rms * normal(random));
      if (spec.dtype == DType::kF32) {
        std::memcpy(&bytes[4 * i], &perturbed, 4);
      } else {
        const uint16_t bits = FloatToBFloat16(perturbed);
        std::memcpy(&bytes[2 * i], &bits, 2);
      }
    }
    if (absl::Status written = (*writer)->Write(spec.name, bytes); !written.ok()) return written;
  }
  return (*writer)->Finish();
}

absl::StatusOr<std::unique_ptr<BlendCluster>> BlendCluster::Start(const BlendClusterOptions& options) {
  auto cluster = std::unique_ptr<BlendCluster>(new BlendCluster());
  cluster->token_ = "test-admin-token-" + std::to_string(std::random_device{}());
  cluster->token_file_ = cluster->scratch_.path() / "admin-token";
  {
    std::ofstream out(cluster->token_file_);
    out << cluster->token_ << "\n";
  }
  const std::string token_flag = absl::StrCat("--admin-token-file=", cluster->token_file_.string());
  for (int index = 0; index < 2; ++index) {
    std::vector<std::string> arguments = {absl::StrCat("--model=", options.model_directory),
                                          absl::StrCat("--shard-index=", index), "--num-shards=2", token_flag};
    if (index == 0) arguments.insert(arguments.end(), options.shard0_flags.begin(), options.shard0_flags.end());
    auto shard = ServiceProcess::Start(absl::StrCat("expert-svc-", index), BinaryPath("expert-svc"), arguments);
    if (!shard.ok()) return shard.status();
    cluster->shards_.push_back(*std::move(shard));
    cluster->shard_channels_.push_back(
        grpc::CreateChannel(cluster->shards_.back()->address(), grpc::InsecureChannelCredentials()));
    cluster->shard_admin_.push_back(v1::ExpertAdminService::NewStub(cluster->shard_channels_.back()));
  }
  auto attention = ServiceProcess::Start(
      "attention-svc", BinaryPath("attention-svc"),
      {absl::StrCat("--model=", options.model_directory),
       absl::StrCat("--expert-shards=", cluster->shards_[0]->address(), ",", cluster->shards_[1]->address())});
  if (!attention.ok()) return attention.status();
  cluster->attention_ = *std::move(attention);
  cluster->attention_channel_ = grpc::CreateChannel(cluster->attention_->address(), grpc::InsecureChannelCredentials());
  cluster->attention_stub_ = v1::AttentionService::NewStub(cluster->attention_channel_);
  auto router = StartRouter("router-svc", {cluster->attention_->address()}, {token_flag, "--max-tokens-limit=2000"});
  if (!router.ok()) return router.status();
  cluster->router_ = *std::move(router);
  cluster->router_channel_ = grpc::CreateChannel(cluster->router_->address(), grpc::InsecureChannelCredentials());
  cluster->router_admin_ = v1::RouterAdminService::NewStub(cluster->router_channel_);
  cluster->router_client_ = std::make_unique<RouterClient>(cluster->router_->address());
  return cluster;
}

BlendCluster::~BlendCluster() {
  // Front to back, so nothing in flight finds its next hop gone.
  if (router_) router_->Terminate();
  if (attention_) attention_->Terminate();
  for (auto& shard : shards_) shard->Terminate();
}

std::unique_ptr<grpc::ClientContext> BlendCluster::AdminContext(std::chrono::seconds timeout) const {
  return AdminContext(token_, timeout);
}

std::unique_ptr<grpc::ClientContext> BlendCluster::AdminContext(const std::string& token,
                                                                std::chrono::seconds timeout) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!token.empty()) rpc::AttachAdminToken(*context, token);
  return context;
}

absl::Status ToStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<v1::FleetWeightSet> BlendCluster::LoadParent(const std::string& name, const std::string& checkpoint) {
  v1::LoadParentRequest request;
  request.set_name(name);
  request.set_checkpoint(checkpoint);
  v1::FleetWeightSet response;
  auto context = AdminContext();
  const grpc::Status status = router_admin_->LoadParent(context.get(), request, &response);
  if (!status.ok()) return ToStatus(status);
  return response;
}

absl::StatusOr<v1::FleetWeightSet> BlendCluster::CreateBlend(const v1::BlendRecipe& recipe) {
  v1::CreateBlendRequest request;
  *request.mutable_recipe() = recipe;
  v1::FleetWeightSet response;
  auto context = AdminContext();
  const grpc::Status status = router_admin_->CreateBlend(context.get(), request, &response);
  if (!status.ok()) return ToStatus(status);
  return response;
}

absl::StatusOr<v1::FleetWeightSets> BlendCluster::List() {
  v1::FleetWeightSets response;
  auto context = AdminContext();
  const grpc::Status status = router_admin_->ListWeightSets(context.get(), v1::ListWeightSetsRequest(), &response);
  if (!status.ok()) return ToStatus(status);
  return response;
}

v1::BlendRecipe TwoParentRecipe(const std::string& name, const std::string& first, const std::string& second,
                                double lambda, double delta) {
  v1::BlendRecipe recipe;
  recipe.set_name(name);
  v1::RecipeParent* a = recipe.add_parents();
  a->set_name(first);
  a->set_lambda(lambda);
  v1::RecipeParent* b = recipe.add_parents();
  b->set_name(second);
  b->set_lambda(1.0 - lambda);
  recipe.set_base(first);
  recipe.set_delta(delta);
  return recipe;
}

}  // namespace expertmesh::testing
