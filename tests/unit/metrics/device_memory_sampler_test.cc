// DeviceMemorySampler and ReadHostMemory: /proc/meminfo parsing (real file and written ones,
// malformed input gets a clear error), and the sampler's thread keeping the device gauges
// current from its probes.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

#include <prometheus/text_serializer.h>

#include "engine/metrics/device_memory_sampler.h"
#include "engine/metrics/resource_metrics.h"
#include "gtest/gtest.h"
#include "tests/unit/metrics/exposition_test_util.h"

namespace expertmesh::metrics {
namespace {

using testing::SeriesKey;

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::filesystem::path path = std::filesystem::temp_directory_path() / (name + std::to_string(::getpid()));
  std::ofstream(path) << text;
  return path.string();
}

std::optional<double> Gauge(prometheus::Registry& registry, const std::string& name, const std::string& device) {
  prometheus::TextSerializer serializer;
  auto parsed = testing::ParseExposition(serializer.Serialize(registry.Collect()));
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? parsed->Value(SeriesKey(name, {{"device", device}})) : std::nullopt;
}

TEST(ReadHostMemoryTest, ParsesTotalAndAvailable) {
  const std::string path = WriteFile("meminfo-ok", "MemTotal:       16384000 kB\nMemFree:  100 kB\n"
                                                   "MemAvailable:    4096000 kB\nBuffers: 5 kB\n");
  absl::StatusOr<DeviceMemory> memory = ReadHostMemory(path);
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_EQ(memory->total_bytes, 16384000ull * 1024);
  EXPECT_EQ(memory->used_bytes, (16384000ull - 4096000ull) * 1024);
  std::filesystem::remove(path);
}

TEST(ReadHostMemoryTest, TheRealFileOfThisMachine) {
  absl::StatusOr<DeviceMemory> memory = ReadHostMemory();
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_GT(memory->total_bytes, 0u);
  EXPECT_LE(memory->used_bytes, memory->total_bytes);
}

TEST(ReadHostMemoryTest, MalformedOrMissingIsAClearError) {
  EXPECT_EQ(ReadHostMemory("/nonexistent/meminfo").status().code(), absl::StatusCode::kNotFound);
  for (const char* text : {"", "MemTotal: 100 kB\n", "MemAvailable: 10 kB\n", "MemTotal: x kB\nMemAvailable: 1 kB\n",
                           "MemTotal: 100 kB\nMemAvailable: 200 kB\n", "MemTotal: 100 MB\nMemAvailable: 10 MB\n"}) {
    const std::string path = WriteFile("meminfo-bad", text);
    absl::StatusOr<DeviceMemory> memory = ReadHostMemory(path);
    EXPECT_EQ(memory.status().code(), absl::StatusCode::kDataLoss) << "'" << text << "'";
    std::filesystem::remove(path);
  }
}

TEST(DeviceMemorySamplerTest, KeepsGaugesCurrentAndReportsTheFirstError) {
  prometheus::Registry registry;
  ResourceMetrics resources(registry, "expert", "test");
  std::atomic<uint64_t> used{100};
  {
    DeviceMemorySampler sampler(resources, std::chrono::milliseconds(20));
    ASSERT_TRUE(sampler.AddDevice("cuda:1", [&]() -> absl::StatusOr<DeviceMemory> {
                  return DeviceMemory{used.load(), 1000};
                }).ok());
    // Sampled at once, before any period passed.
    EXPECT_EQ(Gauge(registry, "expertmesh_device_memory_used_bytes", "cuda:1"), 100);
    EXPECT_EQ(Gauge(registry, "expertmesh_device_memory_total_bytes", "cuda:1"), 1000);
    used = 700;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (Gauge(registry, "expertmesh_device_memory_used_bytes", "cuda:1") != 700 &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(Gauge(registry, "expertmesh_device_memory_used_bytes", "cuda:1"), 700);
    absl::Status failed = sampler.AddDevice("cpu", [] { return absl::StatusOr<DeviceMemory>(absl::UnavailableError("no")); });
    EXPECT_EQ(failed.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(Gauge(registry, "expertmesh_device_memory_used_bytes", "cpu"), std::nullopt);
  }  // the destructor stops the thread: nothing samples after this
  used = 5;
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  EXPECT_EQ(Gauge(registry, "expertmesh_device_memory_used_bytes", "cuda:1"), 700);
}

}  // namespace
}  // namespace expertmesh::metrics
