// Stream loop of the expert shard's Compute RPC.
#include "expert-svc/expert_service.h"

#include <chrono>

#include "absl/status/status.h"

namespace expertmesh::expert_service {

grpc::Status ExpertServiceImpl::Compute(grpc::ServerContext* context,
                                        grpc::ServerReaderWriter<v1::ExpertReply, v1::ExpertRequest>* stream) {
  v1::ExpertRequest request;
  while (stream->Read(&request)) {
    const auto arrival = std::chrono::steady_clock::now();
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
    v1::ExpertReply reply;
    absl::Status status = shard_->Handle(request, &reply);
    if (status.ok() && request.timeout_micros() > 0 &&
        std::chrono::steady_clock::now() - arrival > std::chrono::microseconds(request.timeout_micros())) {
      status = absl::DeadlineExceededError("expert computation exceeded the request's timeout");
    }
    if (!status.ok()) {
      reply.Clear();
      reply.set_request_id(request.request_id());
      reply.mutable_error()->set_code(static_cast<int>(status.code()));
      reply.mutable_error()->set_message(std::string(status.message()));
    }
    if (!stream->Write(reply)) break;  // the peer went away
  }
  if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
  return grpc::Status::OK;
}

grpc::Status ExpertServiceImpl::Describe(grpc::ServerContext*, const v1::DescribeExpertShardRequest*,
                                         v1::ExpertShardDescription* response) {
  *response = shard_->Describe();
  return grpc::Status::OK;
}

}  // namespace expertmesh::expert_service
