// SampleTraffic: synthetic but plausible values for every metric group.
#include "tests/unit/metrics/sample_traffic.h"

#include <array>
#include <vector>

namespace expertmesh::metrics::testing {
namespace {
constexpr std::array<int, 2> kLayers = {1, 2};
constexpr std::array<int, 4> kExperts = {0, 1, 2, 3};
}  // namespace

SampleTraffic::SampleTraffic(ServiceMetrics& service)
    : service_(service),
      serving_(service.registry()),
      fanout_(service.registry(), 2),
      expert_load_(*ExpertLoadMetrics::Create(service.registry(), kLayers, kExperts)),
      blends_(service.registry()) {
  serving_.SetAbSplit({{"prose", 3}, {"code", 1}});
}

void SampleTraffic::RecordRound(int64_t round) {
  const double jitter = static_cast<double>(round % 7) / 7.0;
  for (int i = 0; i < 4; ++i) {
    const char* blend = (i == 3) ? "code" : "prose";
    serving_.RecordFinished({.blend = blend,
                             .finish = (i == 2 && round % 3 == 0) ? RequestFinish::kStop : RequestFinish::kLength,
                             .prompt_tokens = static_cast<uint32_t>(16 + 8 * i),
                             .generated_tokens = 32,
                             .time_to_first_token_seconds = 0.05 + 0.05 * jitter + (i == 3 ? 0.1 : 0),
                             .duration_seconds = 1.0 + jitter + (i == 3 ? 0.5 : 0)});
  }
  if (round % 5 == 0) serving_.RecordFinished({.blend = "code", .finish = RequestFinish::kError});
  serving_.SetWaitingRequests(round % 4);
  if (round % 11 == 0) serving_.RecordAttentionFailover();
  serving_.SetKvCacheUsage(100 + 10 * (round % 10), 4096);
  serving_.RecordStepBatch("prefill", 1 + round % 3);
  serving_.RecordStepBatch("decode", 4 + round % 5);
  for (int shard = 0; shard < 2; ++shard) {
    fanout_.RecordShardRoundTrip(shard, 0.0004 * (1 + shard) + 0.0002 * jitter, 4096, 4096);
  }
  fanout_.RecordLayerFanout(0.001 + 0.0005 * jitter);
  if (round % 13 == 0) fanout_.RecordShardFailover(1);
  // Expert 0 is the busiest, expert 3 the least busy; layer 2 is skewed more.
  std::vector<int32_t> routed = {0, 0, 0, 1, 1, 2, 3, -1};
  expert_load_->RecordTokens(1, routed);
  expert_load_->RecordTokens(2, routed);
  expert_load_->RecordTokens(2, std::vector<int32_t>{0, 0});
  blends_.SetWeightSet("prose", 7u << 20, 1 + static_cast<uint64_t>(round / 10));
  blends_.SetWeightSet("code", 7u << 20, 1);
  if (round % 10 == 0) blends_.RecordSwap("prose", true, 0.4 + jitter);
  if (round % 17 == 0) blends_.RecordSwap("code", false, 0.05);
  service_.resources().SetDeviceMemory("cuda:0", (40ull << 30) + (static_cast<uint64_t>(round % 8) << 28), 80ull << 30);
  service_.resources().SetWeightResidentBytes("cpu", 21u << 20);
  service_.resources().SetWeightResidentBytes("cuda:0", 7u << 20);
  // Keep the running gauge non-zero while this round's requests would be in flight.
  running_.clear();
  for (int i = 0; i < 1 + round % 3; ++i) running_.push_back(serving_.TrackRunning(i == 0 ? "code" : "prose"));
}

}  // namespace expertmesh::metrics::testing
