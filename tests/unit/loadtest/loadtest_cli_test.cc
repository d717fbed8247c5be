// expertmesh-loadtest as users run it: the real binary against the fake router on loopback,
// writing text, JSON, CSV and a PNG latency plot; refusing non-loopback targets; and the plot
// writer on its own.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "loadtest/latency_plot.h"
#include "nlohmann/json.hpp"
#include "tests/unit/loadtest/fake_router.h"

extern char** environ;

namespace expertmesh::loadtest {
namespace {

std::string BinaryPath() {
  const char* dir = std::getenv("EXPERTMESH_BINARY_DIR");
  return std::string(dir != nullptr ? dir : "build") + "/bin/expertmesh-loadtest";
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "expertmesh-loadtest-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs the binary with `arguments`; stdout and stderr go to files in `dir`. Returns the exit code.
int RunLoadtest(const std::vector<std::string>& arguments, const TempDir& dir) {
  std::vector<std::string> all = {BinaryPath()};
  all.insert(all.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (std::string& argument : all) argv.push_back(argument.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, (dir.path() / "stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, (dir.path() / "stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool IsPng(const std::string& bytes) { return bytes.size() > 1000 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0; }

TEST(LoadtestCliTest, RunsAgainstARouterAndWritesEveryReport) {
  testing::FakeRouterServer server({.time_to_first_token = std::chrono::milliseconds(3)});
  TempDir dir;
  int code = RunLoadtest({"--target=" + server.address(), "--concurrency=3", "--requests=24", "--max-tokens=uniform:2:6",
                          "--prompt-tokens=normal:20:5", "--blend-mix=prose=2,code=1", "--progress-interval=50ms",
                          "--json=" + (dir.path() / "report.json").string(), "--csv=" + (dir.path() / "requests.csv").string(),
                          "--plot=" + (dir.path() / "latency.png").string()},
                         dir);
  ASSERT_EQ(code, 0) << ReadFile(dir.path() / "stderr");
  EXPECT_EQ(server.router().requests(), 24);
  std::string text = ReadFile(dir.path() / "stdout");
  EXPECT_NE(text.find("Count:           24 (24 ok, 0 failed)"), std::string::npos) << text;
  EXPECT_NE(ReadFile(dir.path() / "stderr").find("started"), std::string::npos);  // progress lines
  nlohmann::json json = nlohmann::json::parse(ReadFile(dir.path() / "report.json"));
  EXPECT_EQ(json["count"], 24);
  EXPECT_EQ(json["load"], "closed loop, concurrency 3");
  EXPECT_EQ(json["max_tokens_distribution"], "uniform:2:6");
  int64_t generated = json["generated_tokens"];
  EXPECT_GE(generated, 48);
  EXPECT_LE(generated, 144);
  std::string csv = ReadFile(dir.path() / "requests.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 25);
  EXPECT_TRUE(IsPng(ReadFile(dir.path() / "latency.png")));
}

TEST(LoadtestCliTest, RefusesRemoteTargetsAndBadFlags) {
  TempDir dir;
  EXPECT_EQ(RunLoadtest({"--target=10.1.2.3:50051", "--concurrency=1", "--requests=1"}, dir), 2);
  EXPECT_NE(ReadFile(dir.path() / "stderr").find("not a loopback address"), std::string::npos);
  EXPECT_EQ(RunLoadtest({"--target=127.0.0.1:50051", "--concurrency=1"}, dir), 2);
  EXPECT_NE(ReadFile(dir.path() / "stderr").find("bounded"), std::string::npos);
  EXPECT_EQ(RunLoadtest({"--target=127.0.0.1:50051", "--rate=5", "--requests=1", "--max-tokens=0"}, dir), 2);
  EXPECT_NE(ReadFile(dir.path() / "stderr").find("--max-tokens"), std::string::npos);
}

TEST(LoadtestCliTest, ExitsNonZeroWhenRequestsFail) {
  testing::FakeRouterServer server({.time_to_first_token = std::chrono::milliseconds(1), .fail_every = 2});
  TempDir dir;
  EXPECT_EQ(RunLoadtest({"--target=" + server.address(), "--concurrency=1", "--requests=4", "--quiet"}, dir), 1);
  EXPECT_NE(ReadFile(dir.path() / "stdout").find("[ResourceExhausted]   2 responses"), std::string::npos);
}

TEST(LatencyPlotTest, WritesAPngFromResults) {
  RunResult run;
  for (int i = 0; i < 50; ++i) {
    RequestResult request;
    request.start_seconds = 0.1 * i;
    request.end_to_end_seconds = 0.2 + 0.01 * (i % 7);
    request.time_to_first_token_seconds = 0.05;
    request.generated_tokens = 16;
    if (i % 10 == 0) request.code = grpc::StatusCode::UNAVAILABLE;
    run.requests.push_back(request);
  }
  TempDir dir;
  std::string png = (dir.path() / "plot.png").string();
  absl::Status status = WriteLatencyPlot(run, png, "test plot");
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(IsPng(ReadFile(png)));
  EXPECT_NE(ReadFile(png + ".dat").find("# second_centre completed generated_tokens errors"), std::string::npos);
}

}  // namespace
}  // namespace expertmesh::loadtest
