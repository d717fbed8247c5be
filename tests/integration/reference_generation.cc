// ReferenceModel: in-process generation with per-token logits.
#include "tests/integration/reference_generation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "attention-svc/model_metadata.h"
#include "engine/core/status_macros.h"
#include "engine/model/sampler.h"

namespace expertmesh::testing {

absl::StatusOr<std::unique_ptr<ReferenceModel>> ReferenceModel::Load(const std::string& directory) {
  auto reference = std::unique_ptr<ReferenceModel>(new ReferenceModel());
  EXPERTMESH_ASSIGN_OR_RETURN(reference->loaded_, LoadModelFromDirectory(directory));
  EXPERTMESH_ASSIGN_OR_RETURN(reference->eos_token_ids_, attention_service::ReadEosTokenIds(directory));
  return reference;
}

absl::StatusOr<ReferenceOutput> ReferenceModel::Generate(const v1::SequenceRequest& request) const {
  SamplingParams params;
  params.temperature = request.sampling().temperature();
  params.top_p = request.sampling().top_p() == 0.0f ? 1.0f : request.sampling().top_p();
  params.seed = request.sampling().seed();
  EXPERTMESH_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(params));
  std::vector<int32_t> stops(request.stop_token_ids().begin(), request.stop_token_ids().end());
  stops.insert(stops.end(), eos_token_ids_.begin(), eos_token_ids_.end());
  const std::vector<int32_t> prompt(request.prompt_ids().begin(), request.prompt_ids().end());

  const DeepseekModel& model = *loaded_.model;
  LatentKvCache cache = model.NewCache();
  ReferenceOutput output;
  output.finish_reason = v1::FINISH_REASON_LENGTH;
  int32_t next = 0;
  SequenceInput input{&cache, prompt, false};
  for (uint32_t step = 0; step < request.max_tokens(); ++step) {
    if (step > 0) input = SequenceInput{&cache, std::span<const int32_t>(&next, 1), false};
    EXPERTMESH_ASSIGN_OR_RETURN(std::vector<Tensor> logits, model.Step(std::span(&input, 1)));
    std::span<const float> row = logits[0].values();
    EXPERTMESH_ASSIGN_OR_RETURN(next, sampler.Sample(row));
    output.tokens.push_back(next);
    output.logits.emplace_back(row.begin(), row.end());
    if (std::find(stops.begin(), stops.end(), next) != stops.end()) {
      output.finish_reason = v1::FINISH_REASON_STOP;
      break;
    }
  }
  return output;
}

absl::StatusOr<const ReferenceModel*> SharedReferenceModel(const std::string& directory) {
  static std::map<std::string, std::unique_ptr<ReferenceModel>> models;
  std::unique_ptr<ReferenceModel>& model = models[directory];
  if (!model) {
    EXPERTMESH_ASSIGN_OR_RETURN(model, ReferenceModel::Load(directory));
  }
  return model.get();
}

double MaxRelativeDifference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double difference = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    difference = std::max(difference, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale == 0.0 ? difference : difference / scale;
}

}  // namespace expertmesh::testing
