// Histogram bucket layouts shared by the metric definitions (upper bounds, base units). One
// layout per kind of quantity, so panels that compare histograms of the same kind line up.
#pragma once

#include <array>

namespace expertmesh::metrics::buckets {

// gRPC handling time of any call, unary or a whole stream: 0.5 ms .. 5 min.
inline constexpr std::array<double, 18> kRpcSeconds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                       0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                                       5,      10,    30,     60,    120,  300};
// Time to first token: 5 ms .. 60 s.
inline constexpr std::array<double, 17> kTimeToFirstTokenSeconds = {
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 60};
// Time per output token (inter-token latency): 1 ms .. 2.5 s.
inline constexpr std::array<double, 16> kTimePerOutputTokenSeconds = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5};
// Whole request, arrival to last token: 50 ms .. 10 min.
inline constexpr std::array<double, 15> kRequestSeconds = {0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,  10,
                                                           20,   30,  60,   120, 300, 450, 600};
// Tokens per request (prompt or generated): 1 .. 32768, roughly x2 steps.
inline constexpr std::array<double, 16> kTokensPerRequest = {1,   2,   5,    10,   20,   50,   100,   200,
                                                             500, 1000, 2000, 4096, 8192, 16384, 32768, 65536};
// Sequences per model step: powers of two up to 1024.
inline constexpr std::array<double, 11> kBatchSequences = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
// One expert shard's round trip for one layer (and a whole layer's fan-out): 50 us .. 2.5 s.
inline constexpr std::array<double, 16> kFanoutSeconds = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                          0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                                          0.5,     1,      2.5,     5};
// Loading or merging a weight set and swapping it in: 10 ms .. 30 min.
inline constexpr std::array<double, 14> kSwapSeconds = {0.01, 0.05, 0.1, 0.25, 0.5, 1,   2.5,
                                                        5,    10,   30,  60,   300, 900, 1800};

}  // namespace expertmesh::metrics::buckets
