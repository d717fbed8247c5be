// BlendSelector: the seam where router-svc decides which blend (expert weight set) and version
// serve a request. PassThroughBlendSelector forwards the request's explicit `blend` ("" = the
// expert tier's default) without a version; CatalogBlendSelector chooses from the BlendCatalog
// (explicit blend, else the A/B split sticky per ab_key, else the default) and pins the version.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "expertmesh/v1/router_service.pb.h"
#include "router-svc/blend_catalog.h"

namespace expertmesh::router_service {

class BlendSelector {
 public:
  virtual ~BlendSelector() = default;
  // The blend (and version, 0 = the attention tier resolves it) to request from the attention
  // tier; the choice's pin must be held until the request ends. NOT_FOUND for a blend the
  // selector knows to be unknown; a pass-through selector leaves that check to the expert tier.
  virtual absl::StatusOr<BlendChoice> Select(const v1::GenerateRequest& request) = 0;
};

class PassThroughBlendSelector : public BlendSelector {
 public:
  absl::StatusOr<BlendChoice> Select(const v1::GenerateRequest& request) override {
    return BlendChoice{request.blend(), 0, nullptr};
  }
};

class CatalogBlendSelector : public BlendSelector {
 public:
  explicit CatalogBlendSelector(BlendCatalog* catalog) : catalog_(catalog) {}
  absl::StatusOr<BlendChoice> Select(const v1::GenerateRequest& request) override {
    return catalog_->Select(request.blend(), request.ab_key());
  }

 private:
  BlendCatalog* catalog_;
};

}  // namespace expertmesh::router_service
