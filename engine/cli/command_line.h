// Command-line spelling shared by the expertmesh-* tools: absl flags are declared with
// underscores (--max_new_tokens); users and docs also write dashes (--max-new-tokens). This
// rewrites dashed flag names in argv to the underscore form before absl::ParseCommandLine.
#pragma once

#include <cstring>

namespace expertmesh {

// Rewrites "--flag-name[=value]" to "--flag_name[=value]" in place; values, single-dash
// arguments and everything after a bare "--" are left alone.
inline void AcceptDashedFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* argument = argv[i];
    if (std::strcmp(argument, "--") == 0) return;
    if (std::strncmp(argument, "--", 2) != 0) continue;
    for (char* c = argument + 2; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
  }
}

}  // namespace expertmesh
