// AttentionServiceImpl: the gRPC face of the attention tier. Generate validates the request
// against the model (prompt, lengths, sampling, stop ids, blend), pins the sequence's weight set
// (the request's blend and version, or the version the shards serve now) for its whole life, hands
// it to the BatchScheduler and streams a first "pinned" event (blend, version), one event per token
// (with logits when asked) and a final Usage; the client's
// cancellation and deadline end the sequence. Describe reports the model, the expert shards and
// the batch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "attention-svc/batch_scheduler.h"
#include "attention-svc/expert_fanout.h"
#include "engine/format/model_config.h"
#include "expertmesh/v1/attention_service.grpc.pb.h"

namespace expertmesh::attention_service {

struct AttentionServiceOptions {
  int64_t max_prompt_tokens = 0;   // 0: the model's max_position_embeddings
  std::vector<int32_t> eos_token_ids;
  uint64_t resident_weight_bytes = 0;
  std::string backend = "cpu";
};

class AttentionServiceImpl final : public v1::AttentionService::Service {
 public:
  // Nothing is owned; all must outlive the service. `fanout` may be null (a model without MoE
  // layers, or tests), then blends are not checked.
  AttentionServiceImpl(const ModelConfig& config, BatchScheduler* scheduler, const ExpertFanout* fanout,
                       AttentionServiceOptions options);

  grpc::Status Generate(grpc::ServerContext* context, const v1::SequenceRequest* request,
                        grpc::ServerWriter<v1::SequenceEvent>* writer) override;
  grpc::Status Describe(grpc::ServerContext* context, const v1::DescribeAttentionRequest* request,
                        v1::AttentionDescription* response) override;

  // Checks a request against the model; INVALID_ARGUMENT (or NOT_FOUND for an unknown blend)
  // with the reason. Fills `params` (without the deadline), including the pinned weight set.
  absl::Status Validate(const v1::SequenceRequest& request, SequenceParams* params) const;

 private:
  const ModelConfig& config_;
  BatchScheduler* scheduler_;
  const ExpertFanout* fanout_;
  AttentionServiceOptions options_;
};

}  // namespace expertmesh::attention_service
