// Command-line spelling shared by the service binaries: flags are documented with dashes
// (--shard-index) while absl flags are declared with underscores (shard_index). The helper
// rewrites the name part of every "--flag[=value]" argument before absl parses it.
#pragma once

#include <string>
#include <vector>

namespace expertmesh::rpc {

// Arguments with dashes in flag names turned into underscores ("--num-shards=2" ->
// "--num_shards=2"); values, positional arguments and everything after "--" are unchanged.
std::vector<std::string> NormalizeFlagNames(int argc, char** argv);

// argv-style pointers into `arguments` (which must outlive them), null-terminated.
std::vector<char*> ArgvPointers(std::vector<std::string>& arguments);

// NormalizeFlagNames, then absl::ParseCommandLine (which exits with a message on a bad flag).
// Returns the positional arguments, without the program name.
std::vector<std::string> ParseDashedCommandLine(int argc, char** argv);

}  // namespace expertmesh::rpc
