// Persistent Compute stream to one expert shard replica.
#include "attention-svc/shard_connection.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/rpc/grpc_status.h"

namespace expertmesh::attention_service {
namespace {

bool SameHostedExperts(const v1::ExpertShardDescription& a, const v1::ExpertShardDescription& b) {
  if (a.layers_size() != b.layers_size()) return false;
  for (int i = 0; i < a.layers_size(); ++i) {
    if (a.layers(i).layer() != b.layers(i).layer() ||
        a.layers(i).expert_ids().size() != b.layers(i).expert_ids().size()) {
      return false;
    }
    for (int j = 0; j < a.layers(i).expert_ids_size(); ++j) {
      if (a.layers(i).expert_ids(j) != b.layers(i).expert_ids(j)) return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShardConnection>> ShardConnection::Connect(const std::string& address,
                                                                          std::chrono::milliseconds timeout) {
  auto connection = std::unique_ptr<ShardConnection>(new ShardConnection(address));
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(256 << 20);
  arguments.SetMaxSendMessageSize(256 << 20);
  // Reconnect quickly when a shard comes back after a failure.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  connection->channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments);
  connection->stub_ = v1::ExpertService::NewStub(connection->channel_);
  if (absl::Status status = connection->OpenStream(timeout, /*first_time=*/true); !status.ok()) return status;
  return connection;
}

ShardConnection::~ShardConnection() { CloseStream(); }

absl::Status ShardConnection::OpenStream(std::chrono::milliseconds timeout, bool first_time) {
  grpc::ClientContext describe_context;
  describe_context.set_deadline(std::chrono::system_clock::now() + timeout);
  describe_context.set_wait_for_ready(true);
  v1::ExpertShardDescription description;
  const grpc::Status describe_status =
      stub_->Describe(&describe_context, v1::DescribeExpertShardRequest(), &description);
  if (!describe_status.ok()) {
    return absl::UnavailableError(absl::StrCat("expert shard ", address_, ": Describe failed: ",
                                               describe_status.error_message()));
  }
  if (!first_time && !SameHostedExperts(description, description_)) {
    return absl::FailedPreconditionError(
        absl::StrCat("expert shard ", address_, " came back hosting different experts"));
  }
  description_ = std::move(description);
  std::lock_guard<std::mutex> lock(mutex_);
  context_ = std::make_unique<grpc::ClientContext>();
  stream_ = stub_->Compute(context_.get());
  healthy_ = true;
  reader_ = std::thread([this] { ReadLoop(); });
  return absl::OkStatus();
}

void ShardConnection::ReadLoop() {
  v1::ExpertReply reply;
  while (stream_->Read(&reply)) {
    std::promise<absl::StatusOr<v1::ExpertReply>> promise;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto pending = pending_.find(reply.request_id());
      if (pending == pending_.end()) continue;  // a reply to an abandoned request
      promise = std::move(pending->second);
      pending_.erase(pending);
    }
    if (reply.has_error()) {
      promise.set_value(absl::Status(static_cast<absl::StatusCode>(reply.error().code()),
                                     absl::StrCat("expert shard ", address_, ": ", reply.error().message())));
    } else {
      promise.set_value(std::move(reply));
    }
  }
  const grpc::Status status = stream_->Finish();
  healthy_ = false;
  FailPending(status.ok() ? "stream closed" : status.error_message());
}

void ShardConnection::FailPending(const std::string& why) {
  std::map<uint64_t, std::promise<absl::StatusOr<v1::ExpertReply>>> failed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    failed.swap(pending_);
  }
  for (auto& [id, promise] : failed) {
    promise.set_value(absl::UnavailableError(absl::StrCat("expert shard ", address_, " unavailable: ", why)));
  }
}

std::future<absl::StatusOr<v1::ExpertReply>> ShardConnection::Send(v1::ExpertRequest request) {
  std::promise<absl::StatusOr<v1::ExpertReply>> promise;
  auto future = promise.get_future();
  // Lock order: write_mutex_, then mutex_ (as in CloseStream); the reader takes only mutex_.
  std::lock_guard<std::mutex> write_lock(write_mutex_);
  grpc::ClientReaderWriter<v1::ExpertRequest, v1::ExpertReply>* stream;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!healthy_ || !stream_) {
      promise.set_value(absl::UnavailableError(absl::StrCat("expert shard ", address_, " is unavailable")));
      return future;
    }
    const uint64_t id = next_request_id_++;
    request.set_request_id(id);
    pending_.emplace(id, std::move(promise));
    stream = stream_.get();
  }
  if (!stream->Write(request)) {
    // The reader thread sees the broken stream and fails everything pending, this one included.
    healthy_ = false;
  }
  return future;
}

void ShardConnection::CloseStream() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (context_) context_->TryCancel();
  }
  if (reader_.joinable()) reader_.join();
  std::lock_guard<std::mutex> write_lock(write_mutex_);
  std::lock_guard<std::mutex> lock(mutex_);
  stream_.reset();
  context_.reset();
}

absl::Status ShardConnection::Reconnect(std::chrono::milliseconds timeout) {
  CloseStream();
  FailPending("reconnecting");
  return OpenStream(timeout, /*first_time=*/false);
}

}  // namespace expertmesh::attention_service
