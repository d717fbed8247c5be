// DeltaBuilder: turns the token ids of one generation into the TokenDelta events router-svc
// streams: each delta carries the new ids and the text that is safe to send now — never the
// first bytes of an unfinished UTF-8 character (StreamingDecoder) and never text that could be
// the start of a stop string (StopMatcher). Once a stop string appears, the text before it is the
// last text sent and stopped() turns true.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "expertmesh/v1/router_service.pb.h"
#include "router-svc/stop_matcher.h"

namespace expertmesh::router_service {

class DeltaBuilder {
 public:
  // `tokenizer` must outlive the builder.
  DeltaBuilder(const Tokenizer& tokenizer, std::vector<std::string> stop_strings);

  // The delta for one generated token. Ignored (empty delta) once stopped().
  v1::TokenDelta Add(int32_t token_id);
  // At the end of the generation: the text still held back (empty when stopped or nothing held).
  v1::TokenDelta Finish();

  bool stopped() const { return stop_matcher_.stopped(); }
  // Every id added before the stop (the stop string's tokens included).
  int tokens_added() const { return tokens_added_; }

 private:
  StreamingDecoder decoder_;
  StopMatcher stop_matcher_;
  int tokens_added_ = 0;
};

}  // namespace expertmesh::router_service
