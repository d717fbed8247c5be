// BlendSelector: the seam where router-svc decides which blend (expert weight set) serves a
// request. Today's PassThroughBlendSelector forwards the request's explicit `blend` ("" = the
// expert tier's default); the A/B split (sticky per ab_key) plugs in here as another selector.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "expertmesh/v1/router_service.pb.h"

namespace expertmesh::router_service {

class BlendSelector {
 public:
  virtual ~BlendSelector() = default;
  // The blend to request from the attention tier. NOT_FOUND for a blend the selector knows to be
  // unknown; a pass-through selector leaves that check to the expert tier.
  virtual absl::StatusOr<std::string> Select(const v1::GenerateRequest& request) = 0;
};

class PassThroughBlendSelector : public BlendSelector {
 public:
  absl::StatusOr<std::string> Select(const v1::GenerateRequest& request) override { return request.blend(); }
};

}  // namespace expertmesh::router_service
