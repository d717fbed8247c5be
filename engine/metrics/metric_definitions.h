// The definitions of every ExpertMesh metric (see metric_catalog.h for the fields). Names follow
// Prometheus conventions: base units (_seconds, _bytes), counters end in _total, the gRPC ones
// match grpc-ecosystem's go-grpc-prometheus so existing dashboards and alerts work unchanged.
#pragma once

#include "engine/metrics/bucket_layouts.h"
#include "engine/metrics/label_limits.h"
#include "engine/metrics/metric_catalog.h"

namespace expertmesh::metrics::definitions {

// ---- gRPC server (every service, through the interceptor) --------------------------------------
inline constexpr std::string_view kGrpcLabels = "grpc_type,grpc_service,grpc_method";
inline constexpr std::string_view kGrpcCardinality =
    "methods served (<= 8 per service; unknown methods share one 'unknown' series)";
inline constexpr MetricDefinition kGrpcServerStarted{
    "grpc_server_started_total", MetricType::kCounter, kGrpcLabels, "all", kGrpcCardinality,
    "RPCs started on the server."};
inline constexpr MetricDefinition kGrpcServerHandled{
    "grpc_server_handled_total", MetricType::kCounter, "grpc_type,grpc_service,grpc_method,grpc_code", "all",
    "methods x 17 status codes", "RPCs completed on the server, by status code (OK, InvalidArgument, ...)."};
inline constexpr MetricDefinition kGrpcServerHandlingSeconds{
    "grpc_server_handling_seconds", MetricType::kHistogram, kGrpcLabels, "all", kGrpcCardinality,
    "Time from the start of an RPC to its status being sent (whole stream for streaming RPCs).",
    buckets::kRpcSeconds};
inline constexpr MetricDefinition kGrpcServerMsgReceived{
    "grpc_server_msg_received_total", MetricType::kCounter, kGrpcLabels, "all", kGrpcCardinality,
    "Messages received from clients (each message of a stream counts)."};
inline constexpr MetricDefinition kGrpcServerMsgSent{
    "grpc_server_msg_sent_total", MetricType::kCounter, kGrpcLabels, "all", kGrpcCardinality,
    "Messages sent to clients (each message of a stream counts)."};
inline constexpr MetricDefinition kGrpcServerInFlight{
    "grpc_server_in_flight_requests", MetricType::kGauge, kGrpcLabels, "all", kGrpcCardinality,
    "RPCs started and not yet finished."};

// ---- Serving (router-svc: the public Generate API) ---------------------------------------------
inline constexpr std::string_view kBlendCardinality = "blends (<= 16 named + 'other')";
inline constexpr MetricDefinition kRequests{
    "expertmesh_requests_total", MetricType::kCounter, "blend,finish_reason", "router",
    "blends x 5 finish reasons (length, stop, aborted, error, rejected)",
    "Generate requests finished, by the blend that served them and how they ended (rejected: refused "
    "at admission, never ran)."};
inline constexpr MetricDefinition kTimeToFirstToken{
    "expertmesh_time_to_first_token_seconds", MetricType::kHistogram, "blend", "router", kBlendCardinality,
    "Time from a request's arrival to its first generated token being sent.",
    buckets::kTimeToFirstTokenSeconds};
inline constexpr MetricDefinition kTimePerOutputToken{
    "expertmesh_time_per_output_token_seconds", MetricType::kHistogram, "blend", "router", kBlendCardinality,
    "Mean time between generated tokens after the first, one observation per request.",
    buckets::kTimePerOutputTokenSeconds};
inline constexpr MetricDefinition kRequestDuration{
    "expertmesh_request_duration_seconds", MetricType::kHistogram, "blend", "router", kBlendCardinality,
    "End-to-end time of a request, arrival to last token.", buckets::kRequestSeconds};
inline constexpr MetricDefinition kPromptTokens{
    "expertmesh_prompt_tokens_total", MetricType::kCounter, "blend", "router", kBlendCardinality,
    "Prompt tokens of finished requests."};
inline constexpr MetricDefinition kGenerationTokens{
    "expertmesh_generation_tokens_total", MetricType::kCounter, "blend", "router", kBlendCardinality,
    "Tokens generated."};
inline constexpr MetricDefinition kRequestPromptTokens{
    "expertmesh_request_prompt_tokens", MetricType::kHistogram, "blend", "router", kBlendCardinality,
    "Prompt length per request, in tokens.", buckets::kTokensPerRequest};
inline constexpr MetricDefinition kRequestGenerationTokens{
    "expertmesh_request_generation_tokens", MetricType::kHistogram, "blend", "router", kBlendCardinality,
    "Generated length per request, in tokens.", buckets::kTokensPerRequest};
inline constexpr MetricDefinition kRequestsRunning{
    "expertmesh_requests_running", MetricType::kGauge, "blend", "router", kBlendCardinality,
    "Requests admitted and generating."};
inline constexpr MetricDefinition kRequestsWaiting{
    "expertmesh_requests_waiting", MetricType::kGauge, "", "router", "1",
    "Requests in the admission queue, not yet running."};
inline constexpr MetricDefinition kAbSplitWeight{
    "expertmesh_ab_split_weight", MetricType::kGauge, "blend", "router", kBlendCardinality,
    "Configured share of A/B traffic for each blend (0..1; the split's weights, normalised)."};
inline constexpr MetricDefinition kAttentionFailovers{
    "expertmesh_attention_failovers_total", MetricType::kCounter, "", "router", "1",
    "Requests retried on another attention replica after one failed."};

// ---- Attention tier: KV cache, batching and MoE fan-out ----------------------------------------
inline constexpr MetricDefinition kKvCacheUsage{
    "expertmesh_kv_cache_usage_ratio", MetricType::kGauge, "", "attention", "1",
    "Fraction of the latent KV cache's token slots in use (0..1)."};
inline constexpr MetricDefinition kKvCacheCapacity{
    "expertmesh_kv_cache_capacity_tokens", MetricType::kGauge, "", "attention", "1",
    "Token slots of the latent KV cache."};
inline constexpr MetricDefinition kStepBatchSize{
    "expertmesh_step_batch_size", MetricType::kHistogram, "phase", "attention", "2 phases (prefill, decode)",
    "Sequences per model step.", buckets::kBatchSequences};
inline constexpr std::string_view kShardCardinality = "expert shards (<= 256)";
inline constexpr MetricDefinition kMoeFanoutSeconds{
    "expertmesh_moe_fanout_seconds", MetricType::kHistogram, "shard", "attention", kShardCardinality,
    "Round trip of one MoE layer's request to one expert shard, send to reply.", buckets::kFanoutSeconds};
inline constexpr MetricDefinition kMoeLayerFanoutSeconds{
    "expertmesh_moe_layer_fanout_seconds", MetricType::kHistogram, "", "attention", "1",
    "Time to get every shard's reply for one MoE layer (the slowest shard).", buckets::kFanoutSeconds};
inline constexpr MetricDefinition kMoeSentBytes{
    "expertmesh_moe_sent_bytes_total", MetricType::kCounter, "shard", "attention", kShardCardinality,
    "Activation bytes sent to an expert shard (message payloads)."};
inline constexpr MetricDefinition kMoeReceivedBytes{
    "expertmesh_moe_received_bytes_total", MetricType::kCounter, "shard", "attention", kShardCardinality,
    "Output bytes received from an expert shard (message payloads)."};
inline constexpr MetricDefinition kMoeShardFailovers{
    "expertmesh_moe_shard_failovers_total", MetricType::kCounter, "shard", "attention", kShardCardinality,
    "Switches of a shard's traffic to another replica after a replica failed."};

// ---- Expert shards: per-expert load and weight sets (blends) ------------------------------------
inline constexpr MetricDefinition kMoeExpertTokens{
    "expertmesh_moe_expert_tokens_total", MetricType::kCounter, "layer,expert", "expert",
    "hosted MoE layers x hosted experts; whole cluster <= layers x routed experts (V3: 58 x 256)",
    "Token-slots routed to each expert of each MoE layer."};
inline constexpr MetricDefinition kBlendWeightBytes{
    "expertmesh_blend_weight_bytes", MetricType::kGauge, "blend", "expert", kBlendCardinality,
    "Memory held by each loaded weight set (parent checkpoint or blend) on this shard."};
inline constexpr MetricDefinition kBlendVersion{
    "expertmesh_blend_version", MetricType::kGauge, "blend", "expert", kBlendCardinality,
    "Version of each loaded weight set (increases with every swap)."};
inline constexpr MetricDefinition kBlendSwaps{
    "expertmesh_blend_swaps_total", MetricType::kCounter, "blend,result", "expert",
    "blends x 2 results (success, failure)", "Weight-set loads or swaps, by outcome."};
inline constexpr MetricDefinition kBlendSwapSeconds{
    "expertmesh_blend_swap_duration_seconds", MetricType::kHistogram, "blend", "expert", kBlendCardinality,
    "Time to build (load or merge) a weight set and swap it in.", buckets::kSwapSeconds};

// ---- Resources (every service) --------------------------------------------------------------------
inline constexpr std::string_view kDeviceCardinality = "devices (cpu + <= 16 GPUs)";
inline constexpr MetricDefinition kDeviceMemoryUsed{
    "expertmesh_device_memory_used_bytes", MetricType::kGauge, "device", "all", kDeviceCardinality,
    "Memory in use on each device: cuda:N = the card (all processes), cpu = host (MemTotal - MemAvailable)."};
inline constexpr MetricDefinition kDeviceMemoryTotal{
    "expertmesh_device_memory_total_bytes", MetricType::kGauge, "device", "all", kDeviceCardinality,
    "Memory capacity of each device: cuda:N = the card, cpu = host MemTotal."};
inline constexpr MetricDefinition kWeightResidentBytes{
    "expertmesh_weight_resident_bytes", MetricType::kGauge, "device", "all", kDeviceCardinality,
    "Model weight bytes resident on each device (cpu or cuda:N)."};
inline constexpr MetricDefinition kServiceInfo{
    "expertmesh_service_info", MetricType::kGauge, "service,version", "all", "1 per process",
    "Always 1; labels name the service and its build version."};
inline constexpr MetricDefinition kProcessCpuSeconds{
    "process_cpu_seconds_total", MetricType::kCounter, "", "all", "1",
    "User and system CPU time of the process."};
inline constexpr MetricDefinition kProcessResidentMemory{
    "process_resident_memory_bytes", MetricType::kGauge, "", "all", "1", "Resident set size of the process."};
inline constexpr MetricDefinition kProcessVirtualMemory{
    "process_virtual_memory_bytes", MetricType::kGauge, "", "all", "1", "Virtual memory size of the process."};
inline constexpr MetricDefinition kProcessOpenFds{
    "process_open_fds", MetricType::kGauge, "", "all", "1", "Open file descriptors."};
inline constexpr MetricDefinition kProcessMaxFds{
    "process_max_fds", MetricType::kGauge, "", "all", "1", "Limit on open file descriptors."};
inline constexpr MetricDefinition kProcessStartTime{
    "process_start_time_seconds", MetricType::kGauge, "", "all", "1",
    "Start time of the process since the Unix epoch."};

}  // namespace expertmesh::metrics::definitions
