// Persistent Compute stream to one expert shard replica.
#include "attention-svc/shard_connection.h"

#include <cstdio>
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

grpc::ChannelArguments ShardChannelArguments() {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(1 << 30);
  arguments.SetMaxSendMessageSize(1 << 30);
  // Reconnect quickly when a shard comes back after a failure.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // A shard whose host vanished (no RST) is noticed within ~15 s even on an idle stream.
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  return arguments;
}

absl::StatusOr<std::unique_ptr<ShardConnection>> ShardConnection::Connect(const std::string& address,
                                                                          std::chrono::milliseconds timeout) {
  auto connection = std::unique_ptr<ShardConnection>(new ShardConnection(address));
  connection->channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), ShardChannelArguments());
  connection->stub_ = v1::ExpertService::NewStub(connection->channel_);
  if (absl::Status status = connection->OpenStream(timeout, /*first_time=*/true); !status.ok()) return status;
  return connection;
}

ShardConnection::~ShardConnection() {
  CloseStream();
  FailPending("connection closed");
}

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
  if (first_time) {
    description_ = std::move(description);  // never changes afterwards: read without locks
  } else if (!SameHostedExperts(description, description_)) {
    return absl::FailedPreconditionError(
        absl::StrCat("expert shard ", address_, " came back hosting different experts"));
  }
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
    payload_bytes_received_ += reply.outputs().size();
    Pending request;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto pending = pending_.find(reply.request_id());
      if (pending == pending_.end()) continue;  // a reply to an abandoned request
      request = std::move(pending->second);
      pending_.erase(pending);
    }
    std::promise<absl::StatusOr<v1::ExpertReply>>& promise = request.promise;
    if (round_trip_observer_) {
      round_trip_observer_(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - request.sent_at).count(),
          request.bytes_sent, reply.outputs().size());
    }
    if (reply.has_error() && reply.error().code() == static_cast<int>(absl::StatusCode::kUnavailable)) {
      // The shard is shutting down: stop using this stream (the reconnect loop takes over) and
      // let the fan-out fail this request over to another replica.
      healthy_ = false;
      std::lock_guard<std::mutex> lock(mutex_);
      context_->TryCancel();
    }
    if (reply.has_error()) {
      promise.set_value(absl::Status(static_cast<absl::StatusCode>(reply.error().code()),
                                     absl::StrCat("expert shard ", address_, ": ", reply.error().message())));
    } else {
      promise.set_value(std::move(reply));
    }
  }
  // No new request may start writing once the stream is known broken; Finish must not run
  // concurrently with a Write, so it waits for a writer in progress (which fails fast now).
  healthy_ = false;
  grpc::Status status;
  {
    std::lock_guard<std::mutex> write_lock(write_mutex_);
    status = stream_->Finish();
  }
  const std::string why = status.ok() ? "stream closed by the shard" : status.error_message();
  if (status.error_code() != grpc::StatusCode::CANCELLED) {
    std::fprintf(stderr, "expert shard %s unavailable: %s\n", address_.c_str(), why.c_str());
  }
  FailPending(why);
}

void ShardConnection::FailPending(const std::string& why) {
  std::map<uint64_t, Pending> failed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    failed.swap(pending_);
  }
  for (auto& [id, pending] : failed) {
    pending.promise.set_value(absl::UnavailableError(absl::StrCat("expert shard ", address_, " unavailable: ", why)));
  }
}

std::future<absl::StatusOr<v1::ExpertReply>> ShardConnection::Send(v1::ExpertRequest request) {
  std::promise<absl::StatusOr<v1::ExpertReply>> promise;
  auto future = promise.get_future();
  // Lock order: write_mutex_, then mutex_ (as in CloseStream); the reader takes them one at a time.
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
    pending_.emplace(id, Pending{std::move(promise), std::chrono::steady_clock::now(), request.activations().size()});
    stream = stream_.get();
  }
  payload_bytes_sent_ += request.activations().size();
  if (!stream->Write(request)) {
    // The reader sees the broken stream and fails everything pending, this one included.
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
  absl::Status status = OpenStream(timeout, /*first_time=*/false);
  if (status.ok()) std::fprintf(stderr, "expert shard %s reconnected\n", address_.c_str());
  return status;
}

}  // namespace expertmesh::attention_service
