// Replica probing, least-outstanding selection and benching of failed replicas.
#include "router-svc/attention_pool.h"

#include <cstdio>
#include <limits>

#include "absl/strings/str_cat.h"

namespace expertmesh::router_service {

AttentionPool::Lease& AttentionPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (replica_) replica_->outstanding.fetch_sub(1);
    replica_ = other.replica_;
    index_ = other.index_;
    other.replica_ = nullptr;
  }
  return *this;
}

AttentionPool::Lease::~Lease() {
  if (replica_) replica_->outstanding.fetch_sub(1);
}

v1::AttentionService::Stub* AttentionPool::Lease::stub() const { return replica_->stub.get(); }
const std::string& AttentionPool::Lease::address() const { return replica_->address; }

std::unique_ptr<AttentionPool> AttentionPool::Create(const std::vector<std::string>& addresses,
                                                     AttentionPoolOptions options) {
  auto pool = std::unique_ptr<AttentionPool>(new AttentionPool(options));
  for (const std::string& address : addresses) {
    auto replica = std::make_unique<Replica>();
    replica->address = address;
    grpc::ChannelArguments arguments;
    // Come back quickly after a replica restarts; the prober notices within one interval.
    arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    arguments.SetMaxReceiveMessageSize(64 << 20);
    replica->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments);
    replica->stub = v1::AttentionService::NewStub(replica->channel);
    replica->health = grpc::health::v1::Health::NewStub(replica->channel);
    pool->replicas_.push_back(std::move(replica));
  }
  pool->ProbeAll();
  pool->prober_ = std::thread([raw = pool.get()] { raw->ProbeLoop(); });
  return pool;
}

AttentionPool::~AttentionPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (prober_.joinable()) prober_.join();
}

void AttentionPool::Probe(Replica& replica) {
  const auto deadline = std::chrono::system_clock::now() + options_.probe_timeout;
  bool healthy = false;
  std::string why;
  {
    grpc::ClientContext context;
    context.set_deadline(deadline);
    // Wait for the connection rather than failing fast: with gRPC 1.51, fail-fast calls on a
    // channel in TRANSIENT_FAILURE hold back its reconnection for seconds.
    context.set_wait_for_ready(true);
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = replica.health->Check(&context, request, &response);
    healthy = status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    if (!healthy) why = status.ok() ? "not serving (draining?)" : status.error_message();
  }
  if (healthy) {
    grpc::ClientContext context;
    context.set_deadline(deadline);
    v1::DescribeAttentionRequest request;
    v1::AttentionDescription description;
    const grpc::Status status = replica.stub->Describe(&context, request, &description);
    if (!status.ok()) {
      healthy = false;
      why = absl::StrCat("Describe failed: ", status.error_message());
    } else {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!described_) {
        described_ = true;
        model_info_.model_type = description.model_type();
        model_info_.vocab_size = description.vocab_size();
        model_info_.max_position_embeddings = description.max_position_embeddings();
      } else if (description.vocab_size() != model_info_.vocab_size ||
                 description.model_type() != model_info_.model_type) {
        healthy = false;
        why = absl::StrCat("serves ", description.model_type(), " with vocabulary ", description.vocab_size(),
                           "; the other replicas serve ", model_info_.model_type, " with ", model_info_.vocab_size);
      }
    }
  }
  const bool was_healthy = replica.healthy.exchange(healthy);
  if (was_healthy != healthy) {
    std::fprintf(stderr, "attention replica %s is %s%s%s\n", replica.address.c_str(),
                 healthy ? "healthy" : "unhealthy", why.empty() ? "" : ": ", why.c_str());
    { std::lock_guard<std::mutex> lock(mutex_); }  // a waiter is either before its check or asleep
    changed_.notify_all();
  }
}

void AttentionPool::ProbeAll() {
  std::vector<std::thread> probes;
  for (auto& replica : replicas_) probes.emplace_back([this, raw = replica.get()] { Probe(*raw); });
  for (auto& probe : probes) probe.join();
}

void AttentionPool::ProbeLoop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    changed_.wait_for(lock, options_.probe_interval, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    ProbeAll();
    lock.lock();
  }
}

absl::StatusOr<AttentionPool::Lease> AttentionPool::Acquire(const std::set<int>& excluded) {
  const int count = num_replicas();
  const uint32_t start = rotation_.fetch_add(1);
  Replica* best = nullptr;
  int best_index = -1;
  int best_outstanding = std::numeric_limits<int>::max();
  for (int offset = 0; offset < count; ++offset) {
    const int index = static_cast<int>((start + offset) % count);
    Replica& replica = *replicas_[index];
    if (excluded.count(index) || !replica.healthy.load()) continue;
    const int outstanding = replica.outstanding.load();
    if (outstanding < best_outstanding) {
      best = &replica;
      best_index = index;
      best_outstanding = outstanding;
    }
  }
  if (!best) {
    return absl::UnavailableError(absl::StrCat("no healthy attention replica (", num_healthy(), " of ", count,
                                               " healthy", excluded.empty() ? "" : ", others already failed",
                                               ")"));
  }
  best->outstanding.fetch_add(1);
  best->requests_started.fetch_add(1);
  return Lease(best, best_index);
}

void AttentionPool::ReportUnavailable(int index) {
  if (index < 0 || index >= num_replicas()) return;
  Replica& replica = *replicas_[index];
  if (replica.healthy.exchange(false)) {
    std::fprintf(stderr, "attention replica %s is unhealthy: a call failed UNAVAILABLE\n", replica.address.c_str());
  }
}

absl::StatusOr<AttentionModelInfo> AttentionPool::model_info() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!described_) return absl::UnavailableError("no attention replica has answered Describe yet");
  return model_info_;
}

int AttentionPool::num_healthy() const {
  int healthy = 0;
  for (const auto& replica : replicas_) healthy += replica->healthy.load() ? 1 : 0;
  return healthy;
}

std::vector<ReplicaSnapshot> AttentionPool::Snapshot() const {
  std::vector<ReplicaSnapshot> snapshot;
  for (const auto& replica : replicas_) {
    snapshot.push_back({replica->address, replica->healthy.load(), replica->outstanding.load(),
                        replica->requests_started.load()});
  }
  return snapshot;
}

bool AttentionPool::WaitForHealthy(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return stopping_ || num_healthy() > 0; }) && num_healthy() > 0;
}

}  // namespace expertmesh::router_service
