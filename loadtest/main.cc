// expertmesh-loadtest: load tester for RouterService.Generate (closed-loop concurrency or
// open-loop rate, length distributions, blend mix or A/B keys), with a live progress line and a
// ghz-like report as text and JSON, a per-request CSV and a latency-over-time PNG.
//   expertmesh-loadtest --target 127.0.0.1:50051 --concurrency 8 --duration 30s
//       --prompt-tokens uniform:16:128 --max-tokens 64 --blend-mix prose=1,code=1
//       --json report.json --plot latency.png
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "loadtest/latency_plot.h"
#include "loadtest/load_report.h"
#include "loadtest/load_runner.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "router-svc address (loopback unless --allow-remote)");
ABSL_FLAG(bool, allow_remote, false, "allow a target that is not a loopback address");
ABSL_FLAG(std::vector<std::string>, allow_hosts, {}, "non-loopback hosts allowed anyway (network-namespace test hosts)");
ABSL_FLAG(int, connections, 1, "gRPC channels (TCP connections), used round-robin");
ABSL_FLAG(int, concurrency, 0, "closed loop: requests kept in flight");
ABSL_FLAG(double, rate, 0, "open loop: requests started per second");
ABSL_FLAG(std::string, arrival, "poisson", "open-loop arrivals: poisson or constant");
ABSL_FLAG(int, max_in_flight, 512, "open loop: requests due beyond this many in flight are skipped");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(), "how long to send load (e.g. 30s); 0 = until --requests");
ABSL_FLAG(int64_t, requests, 0, "how many requests to send; 0 = until --duration");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(120), "deadline of each request");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30), "after the limit, how long in-flight requests may finish");
ABSL_FLAG(std::string, prompt_tokens, "32", "prompt length distribution: N, uniform:A:B, normal:M:S, exponential:M");
ABSL_FLAG(std::string, max_tokens, "64", "max_tokens distribution (same forms)");
ABSL_FLAG(std::string, prompt_source, "ids", "ids (random token ids) or text (words of --corpus)");
ABSL_FLAG(int, vocab_size, 1536, "token ids are drawn from [--min-token-id, --vocab-size)");
ABSL_FLAG(int, min_token_id, 2, "smallest token id drawn (skip special tokens)");
ABSL_FLAG(std::string, corpus, "", "text file whose words make text prompts");
ABSL_FLAG(double, temperature, 0, "sampling temperature (0 = greedy)");
ABSL_FLAG(double, top_p, 1, "nucleus sampling mass");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed of request 0 (request i uses seed + i)");
ABSL_FLAG(uint64_t, random_seed, 1, "seed of the load tester's own draws (lengths, prompts, blends)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "stop strings sent with every request");
ABSL_FLAG(std::string, blend_mix, "", "explicit blend per request drawn by weight, e.g. prose=3,code=1");
ABSL_FLAG(int, ab_keys, 0, "send ab_key drawn from this many keys (router's A/B split chooses the blend)");
ABSL_FLAG(std::string, json, "", "write the JSON report here");
ABSL_FLAG(std::string, text, "", "write the text report here (default: stdout)");
ABSL_FLAG(std::string, csv, "", "write one line per request here");
ABSL_FLAG(std::string, plot, "", "write a latency-over-time PNG here (needs gnuplot)");
ABSL_FLAG(absl::Duration, progress_interval, absl::Seconds(1), "progress line period");
ABSL_FLAG(bool, quiet, false, "no progress line");

namespace {

using namespace expertmesh::loadtest;

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

int Fail(const std::string& message) {
  std::fprintf(stderr, "expertmesh-loadtest: %s\n", message.c_str());
  return 2;
}

// Flags use dashes on the command line (--max-tokens); absl declares them with underscores.
std::vector<std::string> NormalizeDashes(int argc, char** argv) {
  std::vector<std::string> arguments(argv, argv + argc);
  for (size_t i = 1; i < arguments.size(); ++i) {
    std::string& argument = arguments[i];
    if (argument == "--") break;
    if (argument.rfind("--", 0) != 0) continue;
    size_t end = argument.find('=');
    for (size_t j = 2; j < std::min(end, argument.size()); ++j) {
      if (argument[j] == '-') argument[j] = '_';
    }
  }
  return arguments;
}

bool WriteFile(const std::string& path, const std::string& content) {
  std::ofstream file(path);
  file << content;
  return file.good();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("expertmesh-loadtest --target HOST:PORT (--concurrency N | --rate R) "
                               "(--duration D | --requests N) [options]");
  std::vector<std::string> arguments = NormalizeDashes(argc, argv);
  std::vector<char*> pointers;
  for (std::string& argument : arguments) pointers.push_back(argument.data());
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(pointers.size()), pointers.data());
  if (positional.size() > 1) return Fail(std::string("unexpected argument '") + positional[1] + "'");

  LoadOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  options.allow_remote = absl::GetFlag(FLAGS_allow_remote);
  options.allowed_hosts = absl::GetFlag(FLAGS_allow_hosts);
  options.connections = absl::GetFlag(FLAGS_connections);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.rate = absl::GetFlag(FLAGS_rate);
  const std::string arrival = absl::GetFlag(FLAGS_arrival);
  if (arrival != "poisson" && arrival != "constant") return Fail("--arrival must be poisson or constant");
  options.arrival = arrival == "poisson" ? Arrival::kPoisson : Arrival::kConstant;
  options.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  options.duration_seconds = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_duration));
  options.requests = absl::GetFlag(FLAGS_requests);
  options.request_timeout_seconds = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_timeout));
  options.drain_timeout_seconds = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_drain_timeout));
  auto prompt_tokens = LengthDistribution::Parse(absl::GetFlag(FLAGS_prompt_tokens));
  if (!prompt_tokens.ok()) return Fail("--prompt-tokens: " + std::string(prompt_tokens.status().message()));
  options.prompt_tokens = *prompt_tokens;
  auto max_tokens = LengthDistribution::Parse(absl::GetFlag(FLAGS_max_tokens));
  if (!max_tokens.ok()) return Fail("--max-tokens: " + std::string(max_tokens.status().message()));
  options.max_tokens = *max_tokens;
  const std::string source = absl::GetFlag(FLAGS_prompt_source);
  if (source != "ids" && source != "text") return Fail("--prompt-source must be ids or text");
  options.prompt_source = source == "ids" ? PromptSource::kTokenIds : PromptSource::kText;
  options.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  options.min_token_id = absl::GetFlag(FLAGS_min_token_id);
  if (const std::string corpus = absl::GetFlag(FLAGS_corpus); !corpus.empty()) {
    std::ifstream file(corpus);
    if (!file.good()) return Fail("cannot read --corpus " + corpus);
    std::string word;
    while (file >> word && options.corpus_words.size() < 10'000'000) options.corpus_words.push_back(word);
  }
  options.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  options.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  options.sampling_seed = absl::GetFlag(FLAGS_seed);
  options.random_seed = absl::GetFlag(FLAGS_random_seed);
  options.stop = absl::GetFlag(FLAGS_stop);
  auto mix = BlendMix::Parse(absl::GetFlag(FLAGS_blend_mix));
  if (!mix.ok()) return Fail(std::string(mix.status().message()));
  options.blend_mix = *mix;
  options.ab_keys = absl::GetFlag(FLAGS_ab_keys);
  options.progress_interval_seconds = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_progress_interval));
  if (absl::Status valid = ValidateLoadOptions(options); !valid.ok()) return Fail(std::string(valid.message()));

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  const bool tty = isatty(STDERR_FILENO) != 0;
  std::function<void(const Progress&)> progress;
  if (!absl::GetFlag(FLAGS_quiet)) {
    progress = [tty](const Progress& p) {
      std::string line = absl::StrFormat(
          "[%6.1fs] started %lld  done %lld  failed %lld  in flight %lld%s  |  %.1f req/s  %.1f tok/s  |  "
          "TTFT p50 %s  e2e p50 %s",
          p.elapsed_seconds, static_cast<long long>(p.started), static_cast<long long>(p.finished),
          static_cast<long long>(p.failed), static_cast<long long>(p.in_flight),
          p.skipped > 0 ? absl::StrFormat("  skipped %lld", static_cast<long long>(p.skipped)) : "",
          p.elapsed_seconds > 0 ? static_cast<double>(p.finished) / p.elapsed_seconds : 0.0,
          p.elapsed_seconds > 0 ? static_cast<double>(p.generated_tokens) / p.elapsed_seconds : 0.0,
          p.recent_ttft_p50_seconds >= 0 ? absl::StrFormat("%.1f ms", p.recent_ttft_p50_seconds * 1e3) : "-",
          p.recent_e2e_p50_seconds >= 0 ? absl::StrFormat("%.1f ms", p.recent_e2e_p50_seconds * 1e3) : "-");
      std::fprintf(stderr, tty ? "\r%s\033[K" : "%s\n", line.c_str());
    };
  }
  LoadRunner runner(options);
  absl::StatusOr<RunResult> run = runner.Run(progress, &g_stop);
  if (tty && progress) std::fprintf(stderr, "\n");
  if (!run.ok()) return Fail(std::string(run.status().message()));

  LoadReport report = BuildReport(options, *run);
  const std::string text = FormatText(report);
  if (const std::string path = absl::GetFlag(FLAGS_text); !path.empty()) {
    if (!WriteFile(path, text)) return Fail("cannot write " + path);
  } else {
    std::cout << text << std::flush;
  }
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty() && !WriteFile(path, FormatJson(report))) {
    return Fail("cannot write " + path);
  }
  if (const std::string path = absl::GetFlag(FLAGS_csv); !path.empty() && !WriteFile(path, FormatRequestsCsv(*run))) {
    return Fail("cannot write " + path);
  }
  if (const std::string path = absl::GetFlag(FLAGS_plot); !path.empty()) {
    absl::Status plotted = WriteLatencyPlot(*run, path, "expertmesh-loadtest: " + options.target + ", " + report.load_shape);
    if (!plotted.ok()) return Fail(std::string(plotted.message()));
  }
  // Exit status 1 when any request failed, so scripts notice.
  return report.failed > 0 ? 1 : 0;
}
