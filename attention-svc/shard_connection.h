// ShardConnection: the attention tier's link to one expert-svc replica — a channel, the shard's
// Describe answer, and one persistent Compute stream on which requests are pipelined. A reader
// thread completes each pending request by request_id; when the stream breaks, every pending
// request fails with UNAVAILABLE and the connection reports unhealthy until Reconnect succeeds.
// Keepalive pings detect a peer that vanished without closing its socket.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "expertmesh/v1/expert_service.grpc.pb.h"

namespace expertmesh::attention_service {

class ShardConnection {
 public:
  // Dials `address`, calls Describe (within `timeout`) and opens the Compute stream.
  static absl::StatusOr<std::unique_ptr<ShardConnection>> Connect(const std::string& address,
                                                                   std::chrono::milliseconds timeout);
  ~ShardConnection();

  const std::string& address() const { return address_; }
  const v1::ExpertShardDescription& description() const { return description_; }
  bool healthy() const { return healthy_.load(); }
  // Activation bytes sent and output bytes received on this connection's streams.
  uint64_t payload_bytes_sent() const { return payload_bytes_sent_.load(); }
  uint64_t payload_bytes_received() const { return payload_bytes_received_.load(); }

  // Called on the reader thread for every reply: seconds from Send to the reply, and the payload
  // bytes each way. Set before the first Send.
  using RoundTripObserver = std::function<void(double seconds, uint64_t bytes_sent, uint64_t bytes_received)>;
  void set_round_trip_observer(RoundTripObserver observer) { round_trip_observer_ = std::move(observer); }

  // Queues `request` on the stream (request_id is assigned here). The future yields the reply, or
  // UNAVAILABLE if the stream breaks first.
  std::future<absl::StatusOr<v1::ExpertReply>> Send(v1::ExpertRequest request);

  // Re-dials after a failure: Describe, then a new stream. The shard must host the same experts
  // as before, else FAILED_PRECONDITION (and the connection stays unhealthy).
  absl::Status Reconnect(std::chrono::milliseconds timeout);

 private:
  explicit ShardConnection(std::string address) : address_(std::move(address)) {}
  absl::Status OpenStream(std::chrono::milliseconds timeout, bool first_time);
  void ReadLoop();
  void FailPending(const std::string& why);
  void CloseStream();

  struct Pending {
    std::promise<absl::StatusOr<v1::ExpertReply>> promise;
    std::chrono::steady_clock::time_point sent_at;
    uint64_t bytes_sent = 0;
  };

  const std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ExpertService::Stub> stub_;
  v1::ExpertShardDescription description_;

  // Two locks so a writer blocked by flow control never stops the reader from draining replies.
  std::mutex write_mutex_;  // serializes Write() on stream_
  std::mutex mutex_;        // guards pending_, next_request_id_, context_ and stream_ replacement
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ExpertRequest, v1::ExpertReply>> stream_;
  std::map<uint64_t, Pending> pending_;
  RoundTripObserver round_trip_observer_;
  uint64_t next_request_id_ = 1;
  std::thread reader_;
  std::atomic<bool> healthy_{false};
  std::atomic<uint64_t> payload_bytes_sent_{0};
  std::atomic<uint64_t> payload_bytes_received_{0};
};

// Channel arguments for links to expert shards: large messages, fast reconnects, keepalive.
grpc::ChannelArguments ShardChannelArguments();

}  // namespace expertmesh::attention_service
