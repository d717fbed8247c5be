// The gRPC server metrics interceptor: per-call timing, message counts and status codes.
#include "engine/metrics/grpc_server_metrics.h"

#include <chrono>

#include <google/protobuf/descriptor.h>

#include "absl/strings/str_cat.h"
#include "engine/metrics/metric_definitions.h"
#include "engine/metrics/metric_registration.h"

namespace expertmesh::metrics {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

constexpr std::array<std::string_view, 17> kCodeNames = {
    "OK",      "Canceled",          "Unknown",   "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"};

std::string TypeLabel(bool client_streaming, bool server_streaming) {
  if (client_streaming && server_streaming) return "bidi_stream";
  if (client_streaming) return "client_stream";
  if (server_streaming) return "server_stream";
  return "unary";
}

// One call's recorder. gRPC may run the send and receive hooks of a stream on different threads,
// so the finished flag is atomic.
class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(GrpcServerMetrics& metrics, GrpcServerMetrics::MethodSeries& series)
      : metrics_(metrics), series_(series), start_(std::chrono::steady_clock::now()) {
    series_.started->Increment();
    series_.in_flight->Increment();
  }
  ~MetricsInterceptor() override {
    // A call torn down without sending a status (the client went away) counts as Canceled.
    Finish(grpc::StatusCode::CANCELLED);
    series_.in_flight->Decrement();
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() != nullptr) {
      series_.messages_received->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      series_.messages_sent->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Finish(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Finish(grpc::StatusCode code) {
    if (finished_.exchange(true)) return;
    std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start_;
    series_.handling_seconds->Observe(elapsed.count());
    metrics_.RecordHandled(series_, code);
  }

  GrpcServerMetrics& metrics_;
  GrpcServerMetrics::MethodSeries& series_;
  const std::chrono::steady_clock::time_point start_;
  std::atomic<bool> finished_{false};
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(GrpcServerMetrics& metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    const char* method = info->method();
    return new MetricsInterceptor(metrics_, *metrics_.Find(method == nullptr ? "" : method));
  }

 private:
  GrpcServerMetrics& metrics_;
};

}  // namespace

std::string_view GrpcCodeLabel(grpc::StatusCode code) {
  int index = static_cast<int>(code);
  if (index < 0 || index >= static_cast<int>(kCodeNames.size())) return "Unknown";
  return kCodeNames[index];
}

GrpcServerMetrics::GrpcServerMetrics(prometheus::Registry& registry)
    : started_(RegisterCounter(registry, definitions::kGrpcServerStarted)),
      handled_(RegisterCounter(registry, definitions::kGrpcServerHandled)),
      handling_seconds_(RegisterHistogram(registry, definitions::kGrpcServerHandlingSeconds)),
      messages_received_(RegisterCounter(registry, definitions::kGrpcServerMsgReceived)),
      messages_sent_(RegisterCounter(registry, definitions::kGrpcServerMsgSent)),
      in_flight_(RegisterGauge(registry, definitions::kGrpcServerInFlight)) {}

absl::StatusOr<std::unique_ptr<GrpcServerMetrics>> GrpcServerMetrics::Create(
    prometheus::Registry& registry, const std::vector<std::string>& service_full_names) {
  auto metrics = std::unique_ptr<GrpcServerMetrics>(new GrpcServerMetrics(registry));
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const std::string& name : service_full_names) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    if (service == nullptr) {
      return absl::NotFoundError(absl::StrCat("gRPC metrics: service '", name,
                                              "' is not in this binary's generated protobuf descriptors (is its .proto linked in?)"));
    }
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* method = service->method(i);
      metrics->AddMethod(name, method->name(), TypeLabel(method->client_streaming(), method->server_streaming()));
    }
  }
  // Served by every ServerRunner (grpc++'s default health service and reflection).
  metrics->AddMethod("grpc.health.v1.Health", "Check", "unary");
  metrics->AddMethod("grpc.health.v1.Health", "Watch", "server_stream");
  metrics->AddMethod("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", "bidi_stream");
  return metrics;
}

void GrpcServerMetrics::AddMethod(const std::string& service, const std::string& method, const std::string& type) {
  std::string path = absl::StrCat("/", service, "/", method);
  if (methods_.count(path) > 0) return;
  auto series = std::make_unique<MethodSeries>();
  series->type = type;
  series->service = service;
  series->method = method;
  prometheus::Labels labels = LabelsFor(definitions::kGrpcServerStarted, {type, service, method});
  series->started = &started_.Add(labels);
  series->messages_received = &messages_received_.Add(labels);
  series->messages_sent = &messages_sent_.Add(labels);
  series->in_flight = &in_flight_.Add(labels);
  series->handling_seconds = &handling_seconds_.Add(labels, BucketsOf(definitions::kGrpcServerHandlingSeconds));
  methods_.emplace(std::move(path), std::move(series));
}

GrpcServerMetrics::MethodSeries* GrpcServerMetrics::Find(std::string_view method_path) {
  auto found = methods_.find(std::string(method_path));
  if (found != methods_.end()) return found->second.get();
  std::call_once(unknown_once_, [this] {
    unknown_ = std::make_unique<MethodSeries>();
    unknown_->type = unknown_->service = unknown_->method = "unknown";
    prometheus::Labels labels = LabelsFor(definitions::kGrpcServerStarted, {"unknown", "unknown", "unknown"});
    unknown_->started = &started_.Add(labels);
    unknown_->messages_received = &messages_received_.Add(labels);
    unknown_->messages_sent = &messages_sent_.Add(labels);
    unknown_->in_flight = &in_flight_.Add(labels);
    unknown_->handling_seconds = &handling_seconds_.Add(labels, BucketsOf(definitions::kGrpcServerHandlingSeconds));
  });
  return unknown_.get();
}

void GrpcServerMetrics::RecordHandled(MethodSeries& series, grpc::StatusCode code) {
  int index = static_cast<int>(code);
  if (index < 0 || index >= static_cast<int>(kCodeNames.size())) index = static_cast<int>(grpc::StatusCode::UNKNOWN);
  prometheus::Counter* counter = series.handled_by_code[index].load(std::memory_order_acquire);
  if (counter == nullptr) {
    // Family::Add returns the existing series for equal labels, so a race creates it once.
    counter = &handled_.Add(LabelsFor(definitions::kGrpcServerHandled,
                                      {series.type, series.service, series.method, std::string(kCodeNames[index])}));
    series.handled_by_code[index].store(counter, std::memory_order_release);
  }
  counter->Increment();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> GrpcServerMetrics::NewInterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(*this);
}

void GrpcServerMetrics::InstallOn(grpc::ServerBuilder& builder) {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(NewInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(creators));
}

}  // namespace expertmesh::metrics
