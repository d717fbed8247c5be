// ExpertServiceImpl: the gRPC face of an ExpertShard. Compute is a long-lived bidirectional
// stream: each request is validated and answered on the same stream (errors per message, so one
// bad message does not tear down a stream other layers use); cancellation and per-message
// deadlines are honoured.
#pragma once

#include "expert-svc/expert_shard.h"
#include "expertmesh/v1/expert_service.grpc.pb.h"

namespace expertmesh::expert_service {

class ExpertServiceImpl final : public v1::ExpertService::Service {
 public:
  explicit ExpertServiceImpl(const ExpertShard* shard) : shard_(shard) {}

  grpc::Status Compute(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<v1::ExpertReply, v1::ExpertRequest>* stream) override;
  grpc::Status Describe(grpc::ServerContext* context, const v1::DescribeExpertShardRequest* request,
                        v1::ExpertShardDescription* response) override;

 private:
  const ExpertShard* shard_;
};

}  // namespace expertmesh::expert_service
