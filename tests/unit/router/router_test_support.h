// Small helpers shared by the router unit tests: the bundled tokenizer and a UTF-8 checker.
#pragma once

#include <memory>
#include <string>

#include "engine/tokenizer/tokenizer.h"

namespace expertmesh::router_service {

// models/tokenizer.json (tests run from the source tree); aborts the test binary if missing.
const Tokenizer& BundledTokenizer();

// True when `text` is well-formed UTF-8 (no truncated or overlong sequences, no surrogates).
bool IsValidUtf8(const std::string& text);

}  // namespace expertmesh::router_service
