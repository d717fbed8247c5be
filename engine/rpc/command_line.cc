// Flag-name normalization for the service binaries.
#include "engine/rpc/command_line.h"

#include "absl/flags/parse.h"

namespace expertmesh::rpc {

std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> arguments;
  bool flags_ended = false;
  for (int i = 0; i < argc; ++i) {
    std::string argument = argv[i];
    if (i > 0 && !flags_ended) {
      if (argument == "--") {
        flags_ended = true;
      } else if (argument.size() > 2 && argument[0] == '-') {
        const size_t name_begin = argument[1] == '-' ? 2 : 1;
        const size_t name_end = argument.find('=');
        for (size_t c = name_begin; c < std::min(name_end, argument.size()); ++c) {
          if (argument[c] == '-') argument[c] = '_';
        }
      }
    }
    arguments.push_back(std::move(argument));
  }
  return arguments;
}

std::vector<char*> ArgvPointers(std::vector<std::string>& arguments) {
  std::vector<char*> pointers;
  for (std::string& argument : arguments) pointers.push_back(argument.data());
  pointers.push_back(nullptr);
  return pointers;
}

std::vector<std::string> ParseDashedCommandLine(int argc, char** argv) {
  std::vector<std::string> arguments = NormalizeFlagNames(argc, argv);
  std::vector<char*> pointers = ArgvPointers(arguments);
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(arguments.size()), pointers.data());
  return std::vector<std::string>(positional.begin() + (positional.empty() ? 0 : 1), positional.end());
}

}  // namespace expertmesh::rpc
