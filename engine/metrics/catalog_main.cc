// expertmesh-metrics-catalog: prints every metric ExpertMesh exports (name, type, labels, who
// records it, cardinality bound, help) as JSON (--format=json) or a Markdown table.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "engine/metrics/metric_catalog.h"

ABSL_FLAG(std::string, format, "json", "json or markdown");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string format = absl::GetFlag(FLAGS_format);
  if (format == "json") {
    std::printf("%s\n", expertmesh::metrics::CatalogAsJson().c_str());
  } else if (format == "markdown") {
    std::printf("%s", expertmesh::metrics::CatalogAsMarkdown().c_str());
  } else {
    std::fprintf(stderr, "--format must be json or markdown, not '%s'\n", format.c_str());
    return 2;
  }
  return 0;
}
