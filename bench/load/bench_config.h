// tandem-bench's configuration: the command-line flags parsed into typed
// structs, validated once, and the list of load points a run visits.
//
// Load modes (as vLLM's benchmark_serving combines --request-rate and
// --max-concurrency):
//   neither flag                 every request sent at once, no cap;
//   --request-rate R             open loop, Gamma/Poisson arrivals at R/s;
//   --concurrency C              closed loop: C requests in flight, each
//                                completion lets the next one go;
//   both                         arrivals at R/s, but at most C in flight (an
//                                arrival that finds C in flight waits).
// --sweep rates=... or --sweep concurrency=... makes one point per value.
// Thread-safety: plain structs and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/load/arrivals.h"
#include "bench/load/dataset.h"
#include "bench/load/report.h"

namespace tandem::bench {

enum class SweepKind { kRate, kConcurrency };

// grpc: Tandem's Generation.Generate streams at --addr. openai: streamed
// POST {--base-url}/completions of any OpenAI-compatible server (llama-server,
// vLLM, ...), prompts sent as token-id arrays.
enum class Backend { kGrpc, kOpenAi };

struct SweepSpec {
  SweepKind kind = SweepKind::kRate;
  std::vector<double> values;  // rates (> 0, inf allowed) or concurrencies (integers >= 1)
};

// "rates=1,2,inf" (or "rate=") | "concurrency=1,4,16". InvalidArgument otherwise.
absl::StatusOr<SweepSpec> ParseSweep(const std::string& text);

// One measured run: its arrivals and its cap on requests in flight.
struct LoadPoint {
  std::string label;          // "rate=2", "concurrency=4", "rate=inf"
  ArrivalConfig arrivals;
  int64_t max_concurrency = 0;  // 0 = no cap
};

struct BenchConfig {
  Backend backend = Backend::kGrpc;
  std::string addr = "127.0.0.1:50051";
  std::string base_url;  // openai: e.g. http://127.0.0.1:8080/v1, no trailing '/'
  std::string model;     // openai: the "model" field; empty = the first of GET {base_url}/models
  std::optional<double> request_rate;  // unset = inf
  double burstiness = 1.0;
  int64_t concurrency = 0;             // 0 = no cap
  int64_t num_requests = 100;
  int64_t warmup = 0;
  uint64_t seed = 0;
  DatasetConfig dataset;
  bool ignore_eos = false;
  std::optional<float> temperature;
  SloConfig slo;
  int64_t timeout_s = 600;
  std::string api_key;  // --api-key, else $TANDEM_API_KEY
  std::string json_out;
  bool json_detailed = false;
  std::optional<SweepSpec> sweep;
  std::string plot_out;  // sweep: PNG path (default: --json-out with .png)
  bool help = false;

  absl::Status Validate() const;
  // The points to run, in order: one without --sweep.
  std::vector<LoadPoint> Points() const;
  // Where a sweep's PNG goes.
  std::string PlotPath() const;
};

// Parses argv[1..] into a validated config; `usage` (if not null) receives the
// flag list for --help and error messages. InvalidArgument names the flag.
absl::StatusOr<BenchConfig> ParseBenchFlags(const std::vector<std::string>& args, std::string* usage);

}  // namespace tandem::bench
