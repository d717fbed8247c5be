// ProcessCollector: parses /proc/self/stat, /proc/self/fd and getrlimit at scrape time.
#include "engine/metrics/process_collector.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "engine/metrics/metric_definitions.h"

namespace expertmesh::metrics {
namespace {

prometheus::MetricFamily Single(const MetricDefinition& definition, double value) {
  prometheus::MetricFamily family;
  family.name = std::string(definition.name);
  family.help = std::string(definition.help);
  prometheus::ClientMetric metric;
  if (definition.type == MetricType::kCounter) {
    family.type = prometheus::MetricType::Counter;
    metric.counter.value = value;
  } else {
    family.type = prometheus::MetricType::Gauge;
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

// Seconds since boot at which the system booted, i.e. the epoch time of boot (from /proc/stat).
double BootTimeSeconds() {
  std::ifstream stat("/proc/stat");
  std::string key;
  double value = 0;
  while (stat >> key) {
    if (key == "btime") {
      stat >> value;
      return value;
    }
    stat.ignore(1 << 16, '\n');
  }
  return 0;
}

int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int count = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count - 1;  // the directory stream's own descriptor
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::vector<prometheus::MetricFamily> families;
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may contain spaces) start at field 3 ("state").
  size_t close_paren = stat.rfind(')');
  if (close_paren != std::string::npos) {
    std::istringstream fields(stat.substr(close_paren + 2));
    std::vector<std::string> values;
    std::string field;
    while (fields >> field) values.push_back(field);
    // Field numbers per proc(5), minus 3 for the index into `values`.
    if (values.size() > 21) {
      const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
      double cpu_seconds = (std::stod(values[14 - 3]) + std::stod(values[15 - 3])) / ticks;
      double start_seconds = BootTimeSeconds() + std::stod(values[22 - 3]) / ticks;
      families.push_back(Single(definitions::kProcessCpuSeconds, cpu_seconds));
      families.push_back(Single(definitions::kProcessVirtualMemory, std::stod(values[23 - 3])));
      families.push_back(Single(definitions::kProcessResidentMemory, std::stod(values[24 - 3]) * page));
      families.push_back(Single(definitions::kProcessStartTime, start_seconds));
    }
  }
  families.push_back(Single(definitions::kProcessOpenFds, CountOpenFds()));
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    families.push_back(Single(definitions::kProcessMaxFds, static_cast<double>(limit.rlim_cur)));
  }
  return families;
}

}  // namespace expertmesh::metrics
