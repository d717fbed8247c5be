// Latency plot: data and script files, then gnuplot run as a child process.
#include "loadtest/latency_plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace expertmesh::loadtest {
namespace {

bool FindOnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::vector<std::string> directories = absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':');
  for (const std::string& directory : directories) {
    struct stat info {};
    if (!directory.empty() && stat((directory + "/" + program).c_str(), &info) == 0 && (info.st_mode & S_IXUSR)) {
      return true;
    }
  }
  return false;
}

std::string Quote(const std::string& text) { return "'" + absl::StrReplaceAll(text, {{"'", "''"}}) + "'"; }

}  // namespace

absl::Status WriteLatencyPlot(const RunResult& run, const std::string& png_path, const std::string& title) {
  if (!FindOnPath("gnuplot")) {
    return absl::FailedPreconditionError("gnuplot not found on PATH: install gnuplot-nox (scripts/install-deps)");
  }
  const std::string data_path = png_path + ".dat";
  int64_t ok = 0;         // successful requests (points of the top panel)
  int64_t with_ttft = 0;  // ... of which produced a token
  const std::string script_path = png_path + ".gp";
  {
    std::ofstream data(data_path);
    // Block 0: per request (start, e2e ms, ttft ms) for successful requests.
    data << "# start_seconds end_to_end_ms ttft_ms\n";
    for (const RequestResult& request : run.requests) {
      if (!request.ok()) continue;
      ++ok;
      if (request.time_to_first_token_seconds >= 0) ++with_ttft;
      data << absl::StrFormat("%.6f %.4f %.4f\n", request.start_seconds, request.end_to_end_seconds * 1e3,
                              request.time_to_first_token_seconds >= 0 ? request.time_to_first_token_seconds * 1e3 : NAN);
    }
    if (ok == 0) data << "0 NaN NaN\n";
    // Block 1: per second of completion (second, requests, generated tokens, errors).
    std::map<int64_t, std::array<int64_t, 3>> per_second;
    for (const RequestResult& request : run.requests) {
      auto& bin = per_second[static_cast<int64_t>(std::floor(request.start_seconds + request.end_to_end_seconds))];
      bin[0]++;
      bin[1] += request.generated_tokens;
      if (!request.ok()) bin[2]++;
    }
    data << "\n\n# second_centre completed generated_tokens errors\n";
    if (per_second.empty()) data << "0 0 0 0\n";
    for (const auto& [second, bin] : per_second) {
      data << (second + 0.5) << " " << bin[0] << " " << bin[1] << " " << bin[2] << "\n";  // bin centre
    }
    if (!data.good()) return absl::InternalError(absl::StrCat("cannot write ", data_path));
  }
  {
    std::ofstream script(script_path);
    script << "set terminal pngcairo size 1200,900 noenhanced font 'sans,10'\n"
           << "set output " << Quote(png_path) << "\n"
           << "set multiplot layout 2,1 title " << Quote(title) << "\n"
           << "set grid\nset key top left\nset xlabel 'request start (s)'\nset ylabel 'latency (ms)'\nset yrange [0:*]\n"
           << "";
    if (ok == 0) {
      script << "plot " << Quote(data_path) << " index 1 using 1:4 with histeps title 'errors/s (no successful requests)'";
    } else {
      script << "plot " << Quote(data_path) << " index 0 using 1:2 with points pt 7 ps 0.4 title 'end-to-end'";
    }
    // gnuplot refuses a series whose points are all undefined.
    if (with_ttft > 0) script << ", \\\n     '' index 0 using 1:3 with points pt 7 ps 0.4 title 'time to first token'";
    script << "\n"
           << "set xlabel 'time (s)'\nset ylabel 'requests/s'\nset y2label 'tokens/s'\nset y2tics\nset ytics nomirror\nset y2range [0:*]\n"
           << "plot " << Quote(data_path) << " index 1 using 1:2 with histeps title 'completed requests/s', \\\n"
           << "     '' index 1 using 1:4 with histeps title 'errors/s', \\\n"
           << "     '' index 1 using 1:3 axes x1y2 with histeps title 'generated tokens/s'\n"
           << "unset multiplot\n";
    if (!script.good()) return absl::InternalError(absl::StrCat("cannot write ", script_path));
  }
  pid_t pid = 0;
  std::string program = "gnuplot";
  std::vector<char*> arguments = {program.data(), const_cast<char*>(script_path.c_str()), nullptr};
  const std::string log_path = png_path + ".log";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  int spawned = posix_spawnp(&pid, "gnuplot", &actions, nullptr, arguments.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return absl::InternalError("cannot start gnuplot");
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ifstream log(log_path);
    std::string output((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    return absl::InternalError(absl::StrCat("gnuplot failed on ", script_path, ": ", output));
  }
  struct stat info {};
  if (stat(png_path.c_str(), &info) != 0 || info.st_size == 0) {
    return absl::InternalError(absl::StrCat("gnuplot wrote no ", png_path));
  }
  return absl::OkStatus();
}

}  // namespace expertmesh::loadtest
