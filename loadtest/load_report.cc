// LoadReport: aggregation and text/JSON/CSV rendering.
#include "loadtest/load_report.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace expertmesh::loadtest {
namespace {

constexpr const char* kCodeNames[] = {"OK",         "Canceled",         "Unknown",           "InvalidArgument",
                                      "DeadlineExceeded", "NotFound",   "AlreadyExists",     "PermissionDenied",
                                      "ResourceExhausted", "FailedPrecondition", "Aborted",  "OutOfRange",
                                      "Unimplemented", "Internal",      "Unavailable",       "DataLoss",
                                      "Unauthenticated"};

std::string CodeName(grpc::StatusCode code) {
  int index = static_cast<int>(code);
  return (index >= 0 && index < 17) ? kCodeNames[index] : absl::StrCat("Code", index);
}

std::string Milliseconds(double seconds) { return absl::StrFormat("%.2f ms", seconds * 1e3); }

nlohmann::json ToJson(const LatencySummary& summary) {
  return {{"count", summary.count}, {"min", summary.min}, {"mean", summary.mean}, {"p50", summary.p50},
          {"p90", summary.p90},     {"p99", summary.p99}, {"max", summary.max}};
}

void AppendLatencyRow(std::string* out, const char* name, const LatencySummary& summary) {
  absl::StrAppend(out, absl::StrFormat("  %-6s %8lld %12s %12s %12s %12s %12s\n", name,
                                       static_cast<long long>(summary.count), Milliseconds(summary.mean),
                                       Milliseconds(summary.p50), Milliseconds(summary.p90), Milliseconds(summary.p99),
                                       Milliseconds(summary.max)));
}

}  // namespace

LatencySummary Summarize(std::vector<double> values) {
  LatencySummary summary;
  if (values.empty()) return summary;
  std::sort(values.begin(), values.end());
  auto rank = [&](double quantile) {
    size_t index = static_cast<size_t>(std::ceil(quantile * static_cast<double>(values.size())));
    return values[std::clamp<size_t>(index, 1, values.size()) - 1];
  };
  summary.count = static_cast<int64_t>(values.size());
  summary.min = values.front();
  summary.max = values.back();
  summary.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  summary.p50 = rank(0.5);
  summary.p90 = rank(0.9);
  summary.p99 = rank(0.99);
  return summary;
}

LoadReport BuildReport(const LoadOptions& options, const RunResult& run) {
  LoadReport report;
  report.target = options.target;
  report.load_shape = DescribeLoadShape(options);
  report.prompt_distribution = options.prompt_tokens.ToString();
  report.max_tokens_distribution = options.max_tokens.ToString();
  report.requests = static_cast<int64_t>(run.requests.size());
  report.skipped = run.skipped;
  report.cancelled_at_end = run.cancelled_at_end;
  report.interrupted = run.interrupted;
  report.wall_seconds = run.wall_seconds;
  std::vector<double> ttft, tpot, e2e;
  std::map<std::pair<std::string, uint64_t>, std::vector<const RequestResult*>> by_blend;
  for (const RequestResult& request : run.requests) {
    report.status_codes[CodeName(request.code)]++;
    report.generated_tokens += request.generated_tokens;
    report.prompt_tokens += request.prompt_tokens;
    if (!request.ok()) {
      report.failed++;
      report.errors[absl::StrCat(CodeName(request.code), ": ", request.error_message)]++;
      continue;
    }
    report.succeeded++;
    e2e.push_back(request.end_to_end_seconds);
    if (request.time_to_first_token_seconds >= 0) ttft.push_back(request.time_to_first_token_seconds);
    if (request.TimePerOutputToken() >= 0) tpot.push_back(request.TimePerOutputToken());
    by_blend[{request.blend, request.blend_version}].push_back(&request);
  }
  if (run.wall_seconds > 0) {
    report.requests_per_second = static_cast<double>(report.requests) / run.wall_seconds;
    report.generated_tokens_per_second = static_cast<double>(report.generated_tokens) / run.wall_seconds;
    report.prompt_tokens_per_second = static_cast<double>(report.prompt_tokens) / run.wall_seconds;
  }
  report.time_to_first_token = Summarize(ttft);
  report.time_per_output_token = Summarize(tpot);
  report.end_to_end = Summarize(e2e);
  if (!e2e.empty()) {
    // Ten equal-width buckets from the fastest to the slowest request (like ghz).
    const int buckets = 10;
    const double low = report.end_to_end.min;
    const double width = (report.end_to_end.max - low) / buckets;
    for (int i = 0; i < buckets; ++i) report.end_to_end_histogram.push_back({low + width * (i + 1), 0});
    for (double value : e2e) {
      int index = width > 0 ? std::clamp(static_cast<int>(std::ceil((value - low) / width)) - 1, 0, buckets - 1) : 0;
      report.end_to_end_histogram[index].count++;
    }
  }
  for (const auto& [key, requests] : by_blend) {
    BlendSummary blend;
    blend.blend = key.first;
    blend.version = key.second;
    blend.requests = static_cast<int64_t>(requests.size());
    std::vector<double> blend_ttft, blend_tpot, blend_e2e;
    for (const RequestResult* request : requests) {
      blend.generated_tokens += request->generated_tokens;
      blend_e2e.push_back(request->end_to_end_seconds);
      if (request->time_to_first_token_seconds >= 0) blend_ttft.push_back(request->time_to_first_token_seconds);
      if (request->TimePerOutputToken() >= 0) blend_tpot.push_back(request->TimePerOutputToken());
    }
    blend.time_to_first_token = Summarize(blend_ttft);
    blend.time_per_output_token = Summarize(blend_tpot);
    blend.end_to_end = Summarize(blend_e2e);
    report.blends.push_back(std::move(blend));
  }
  std::stable_sort(report.blends.begin(), report.blends.end(),
                   [](const BlendSummary& a, const BlendSummary& b) { return a.requests > b.requests; });
  return report;
}

std::string FormatText(const LoadReport& report) {
  std::string out = "Summary:\n";
  absl::StrAppend(&out, "  Target:          ", report.target, "\n");
  absl::StrAppend(&out, "  Load:            ", report.load_shape, "\n");
  absl::StrAppend(&out, "  Prompt tokens:   ", report.prompt_distribution, "   max_tokens: ", report.max_tokens_distribution, "\n");
  absl::StrAppend(&out, absl::StrFormat("  Count:           %lld (%lld ok, %lld failed)\n",
                                        static_cast<long long>(report.requests), static_cast<long long>(report.succeeded),
                                        static_cast<long long>(report.failed)));
  if (report.skipped > 0) {
    absl::StrAppend(&out, "  Skipped:         ", report.skipped, " (due while --max-in-flight requests were running)\n");
  }
  if (report.cancelled_at_end > 0) {
    absl::StrAppend(&out, "  Cancelled:       ", report.cancelled_at_end, " (still running after the drain timeout)\n");
  }
  if (report.interrupted) absl::StrAppend(&out, "  Interrupted:     yes (stopped by a signal)\n");
  absl::StrAppend(&out, absl::StrFormat("  Total:           %.2f s\n", report.wall_seconds));
  absl::StrAppend(&out, "  Slowest:         ", Milliseconds(report.end_to_end.max), "\n");
  absl::StrAppend(&out, "  Fastest:         ", Milliseconds(report.end_to_end.min), "\n");
  absl::StrAppend(&out, "  Average:         ", Milliseconds(report.end_to_end.mean), "\n");
  absl::StrAppend(&out, absl::StrFormat("  Requests/sec:    %.2f\n", report.requests_per_second));
  absl::StrAppend(&out, absl::StrFormat("  Tokens/sec:      %.2f generated, %.2f prompt\n",
                                        report.generated_tokens_per_second, report.prompt_tokens_per_second));
  absl::StrAppend(&out, "\nLatency (successful requests):\n");
  absl::StrAppend(&out, absl::StrFormat("  %-6s %8s %12s %12s %12s %12s %12s\n", "", "count", "mean", "p50", "p90",
                                        "p99", "max"));
  AppendLatencyRow(&out, "TTFT", report.time_to_first_token);
  AppendLatencyRow(&out, "TPOT", report.time_per_output_token);
  AppendLatencyRow(&out, "e2e", report.end_to_end);
  if (!report.end_to_end_histogram.empty()) {
    absl::StrAppend(&out, "\nResponse time histogram (e2e):\n");
    int64_t largest = 1;
    for (const auto& bucket : report.end_to_end_histogram) largest = std::max(largest, bucket.count);
    for (const auto& bucket : report.end_to_end_histogram) {
      int bar = static_cast<int>(40 * bucket.count / largest);
      absl::StrAppend(&out, absl::StrFormat("  %10.2f ms [%lld]\t|%s\n", bucket.upper_seconds * 1e3,
                                            static_cast<long long>(bucket.count), std::string(bar, '#')));
    }
  }
  absl::StrAppend(&out, "\nStatus code distribution:\n");
  for (const auto& [code, count] : report.status_codes) {
    absl::StrAppend(&out, absl::StrFormat("  [%s]   %lld responses\n", code, static_cast<long long>(count)));
  }
  if (!report.errors.empty()) {
    absl::StrAppend(&out, "\nError distribution:\n");
    for (const auto& [error, count] : report.errors) {
      absl::StrAppend(&out, absl::StrFormat("  [%lld]   %s\n", static_cast<long long>(count), error));
    }
  }
  absl::StrAppend(&out, "\nBlends (successful requests, from each response's usage event):\n");
  absl::StrAppend(&out, absl::StrFormat("  %-20s %8s %9s %7s %12s %12s %12s\n", "blend", "version", "requests", "share",
                                        "TTFT p50", "TPOT p50", "e2e p50"));
  for (const BlendSummary& blend : report.blends) {
    double share = report.succeeded > 0 ? 100.0 * static_cast<double>(blend.requests) / static_cast<double>(report.succeeded) : 0;
    absl::StrAppend(&out, absl::StrFormat("  %-20s %8llu %9lld %6.1f%% %12s %12s %12s\n",
                                          blend.blend.empty() ? "(no usage)" : blend.blend,
                                          static_cast<unsigned long long>(blend.version),
                                          static_cast<long long>(blend.requests), share,
                                          Milliseconds(blend.time_to_first_token.p50),
                                          Milliseconds(blend.time_per_output_token.p50), Milliseconds(blend.end_to_end.p50)));
  }
  return out;
}

std::string FormatJson(const LoadReport& report) {
  nlohmann::json json;
  json["target"] = report.target;
  json["load"] = report.load_shape;
  json["prompt_tokens_distribution"] = report.prompt_distribution;
  json["max_tokens_distribution"] = report.max_tokens_distribution;
  json["count"] = report.requests;
  json["succeeded"] = report.succeeded;
  json["failed"] = report.failed;
  json["skipped"] = report.skipped;
  json["cancelled_at_end"] = report.cancelled_at_end;
  json["interrupted"] = report.interrupted;
  json["total_seconds"] = report.wall_seconds;
  json["requests_per_second"] = report.requests_per_second;
  json["generated_tokens"] = report.generated_tokens;
  json["prompt_tokens"] = report.prompt_tokens;
  json["generated_tokens_per_second"] = report.generated_tokens_per_second;
  json["prompt_tokens_per_second"] = report.prompt_tokens_per_second;
  json["latency_seconds"] = {{"time_to_first_token", ToJson(report.time_to_first_token)},
                             {"time_per_output_token", ToJson(report.time_per_output_token)},
                             {"end_to_end", ToJson(report.end_to_end)}};
  json["histogram"] = nlohmann::json::array();
  for (const auto& bucket : report.end_to_end_histogram) {
    json["histogram"].push_back({{"upper_seconds", bucket.upper_seconds}, {"count", bucket.count}});
  }
  json["status_codes"] = report.status_codes;
  json["errors"] = report.errors;
  json["blends"] = nlohmann::json::array();
  for (const BlendSummary& blend : report.blends) {
    json["blends"].push_back({{"blend", blend.blend},
                              {"version", blend.version},
                              {"requests", blend.requests},
                              {"generated_tokens", blend.generated_tokens},
                              {"time_to_first_token", ToJson(blend.time_to_first_token)},
                              {"time_per_output_token", ToJson(blend.time_per_output_token)},
                              {"end_to_end", ToJson(blend.end_to_end)}});
  }
  return json.dump(2);
}

std::string FormatRequestsCsv(const RunResult& run) {
  std::string out = "start_seconds,end_to_end_seconds,ttft_seconds,tpot_seconds,prompt_tokens,generated_tokens,code,blend,blend_version\n";
  for (const RequestResult& request : run.requests) {
    absl::StrAppend(&out, absl::StrFormat("%.6f,%.6f,%.6f,%.6f,%d,%lld,%s,%s,%llu\n", request.start_seconds,
                                          request.end_to_end_seconds, request.time_to_first_token_seconds,
                                          request.TimePerOutputToken(), request.prompt_tokens,
                                          static_cast<long long>(request.generated_tokens), CodeName(request.code),
                                          request.blend, static_cast<unsigned long long>(request.blend_version)));
  }
  return out;
}

}  // namespace expertmesh::loadtest
