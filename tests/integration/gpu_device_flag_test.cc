// The services' --device flag where no GPU serves (label integration, runs in CI): a bad value is
// refused at start with a message naming --device; --device=cuda:0 either serves (a CUDA build on
// a machine with a GPU) or is refused with a message naming --device=cuda:0 and the reason (built
// without CUDA, or no GPU present), never a crash or a silent CPU fallback; an unknown
// --gpu-expert-path is refused too.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/service_process.h"

namespace expertmesh::testing {
namespace {

std::vector<std::string> Arguments(const std::string& binary, const std::string& device) {
  std::vector<std::string> arguments = {"--model=" + SourcePath("tests/fixtures/v3_tiny"), "--device=" + device};
  if (binary == "expert-svc") {
    arguments.insert(arguments.end(), {"--shard-index=0", "--num-shards=1"});
  } else {
    arguments.push_back("--expert-shards=127.0.0.1:1");  // never reached: the device is checked first
    arguments.push_back("--connect-timeout-ms=500");
  }
  return arguments;
}

TEST(GpuDeviceFlag, MalformedDeviceIsRefused) {
  for (const std::string binary : {"expert-svc", "attention-svc"}) {
    for (const std::string device : {"tpu:0", "cuda:", "cuda:-1", "cuda:x", ""}) {
      auto process = ServiceProcess::Start(binary + "-bad-device", BinaryPath(binary), Arguments(binary, device),
                                           std::chrono::seconds(20));
      ASSERT_FALSE(process.ok()) << binary << " started with --device=" << device;
      EXPECT_NE(std::string(process.status().message()).find("--device"), std::string::npos)
          << binary << " --device=" << device << ": " << process.status();
    }
  }
}

TEST(GpuDeviceFlag, CudaDeviceServesOrIsRefusedClearly) {
  // expert-svc only: attention-svc would also need a reachable shard to reach SERVING.
  auto process = ServiceProcess::Start("expert-svc-cuda", BinaryPath("expert-svc"), Arguments("expert-svc", "cuda:0"),
                                       std::chrono::seconds(60));
  if (process.ok()) {
    EXPECT_EQ((*process)->Terminate(), 0) << "a GPU is present: the shard served from it";
    return;
  }
  const std::string message(process.status().message());
  EXPECT_NE(message.find("--device=cuda:0"), std::string::npos) << message;
  EXPECT_TRUE(message.find("EXPERTMESH_CUDA") != std::string::npos || message.find("GPU") != std::string::npos)
      << "the reason: a build without CUDA or no GPU present\n" << message;
}

// An unknown --gpu-expert-path is refused with a message naming it (with a GPU), or the device is
// refused first (without one).
TEST(GpuDeviceFlag, UnknownGpuExpertPathIsRefused) {
  std::vector<std::string> arguments = Arguments("expert-svc", "cuda:0");
  arguments.push_back("--gpu-expert-path=fastest");
  auto process = ServiceProcess::Start("expert-svc-bad-path", BinaryPath("expert-svc"), arguments,
                                       std::chrono::seconds(60));
  ASSERT_FALSE(process.ok()) << "expert-svc started with --gpu-expert-path=fastest";
  const std::string message(process.status().message());
  EXPECT_TRUE(message.find("gpu_expert_path") != std::string::npos ||
              message.find("--device=cuda:0") != std::string::npos)
      << message;
}

}  // namespace
}  // namespace expertmesh::testing
