// The monolithic reference for the distributed tests: the same model loaded in-process
// (LoadModelFromDirectory, local experts) generating with the same sampler and stop rules as
// attention-svc, keeping the logits each token was chosen from.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/weight_loader.h"
#include "expertmesh/v1/attention_service.pb.h"

namespace expertmesh::testing {

struct ReferenceOutput {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
};

class ReferenceModel {
 public:
  static absl::StatusOr<std::unique_ptr<ReferenceModel>> Load(const std::string& directory);
  // Generates for `request` (prompt, max_tokens, sampling, stop ids + the model's EOS).
  absl::StatusOr<ReferenceOutput> Generate(const v1::SequenceRequest& request) const;
  const ModelConfig& config() const { return loaded_.config; }

 private:
  LoadedModel loaded_;
  std::vector<int32_t> eos_token_ids_;
};

// The reference for the model in `directory`, loaded on first use and kept for the rest of the
// process (the tests compare several clusters against one model). Test-thread use only.
absl::StatusOr<const ReferenceModel*> SharedReferenceModel(const std::string& directory);

// max |a - b| over both, divided by max |b| (inf when sizes differ).
double MaxRelativeDifference(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace expertmesh::testing
