// The benchmark's aggregate report: throughput, latency summaries, goodput
// and failures over the measured requests of one run.
//
// Only completed (OK) requests contribute tokens and latencies, as in vLLM's
// benchmark; failed ones are counted by status code. Throughputs divide by
// the run's duration (first send to last completion, measured by the runner).
// Thread-safety: plain structs and pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bench/load/percentiles.h"
#include "bench/load/request_metrics.h"

namespace tandem::bench {

// What the runner records for one request.
struct RequestRecord {
  RequestTrace trace;
  absl::Status status;                  // the stream's final status
  int64_t requested_input_tokens = 0;   // prompt ids sent
  int64_t requested_output_tokens = 0;  // sampling.max_tokens sent
  int64_t usage_prompt_tokens = 0;      // usage of the last chunk; 0 if none came
  int64_t usage_completion_tokens = 0;
  std::string finish_reason;            // "length" | "stop" | "" (none came)
  std::vector<uint32_t> output_token_ids;  // the tokens received (gRPC backend; multi-turn builds on them)
};

// Service-level objectives for goodput; unset ones are not checked.
struct SloConfig {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  bool any() const { return ttft_ms.has_value() || tpot_ms.has_value(); }
};

struct BenchReport {
  double duration_s = 0;
  int64_t num_requests = 0;
  int64_t completed = 0;
  int64_t failed = 0;
  std::map<std::string, int64_t> failures;        // status code name -> count
  std::map<std::string, std::string> failure_examples;  // code name -> first message
  // Sums over completed requests.
  int64_t total_input_tokens = 0;       // usage.prompt_tokens (the server's count)
  int64_t total_output_tokens = 0;      // token ids received
  int64_t total_requested_input_tokens = 0;
  int64_t total_requested_output_tokens = 0;
  double request_throughput = 0;        // completed / s
  double output_throughput = 0;         // output tokens / s
  double total_token_throughput = 0;    // (input + output) tokens / s
  LatencySummary ttft_ms, itl_ms, tpot_ms, e2el_ms;
  SloConfig slo;
  int64_t good_requests = 0;            // completed and within every set SLO
  std::optional<double> goodput;        // good_requests / s; set when slo.any()
};

// A request meets the SLOs when its TTFT and TPOT are within the set bounds;
// a request with one output token has no TPOT and passes that check.
bool MeetsSlo(const RequestMetrics& m, const SloConfig& slo);

BenchReport BuildReport(const std::vector<RequestRecord>& records, int64_t duration_ns, const SloConfig& slo);

}  // namespace tandem::bench
