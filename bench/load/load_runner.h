// LoadRunner: sends a list of benchmark requests to a Tandem endpoint on an
// arrival schedule with an optional cap on requests in flight, and collects
// one RequestRecord per request.
//
// The calling thread is the dispatcher: it sleeps until each arrival time,
// waits for a free slot when capped, and starts a GenerateCall; gRPC's
// callback threads run the streams and only record and signal, never block.
// A request's clock starts when it is sent, so under a cap the time an
// arrival spent waiting for a slot is not counted in its TTFT (as in vLLM's
// benchmark with --max-concurrency).
// Thread-safety: Run is called from one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/load/bench_config.h"
#include "bench/load/dataset.h"
#include "bench/load/report.h"

namespace grpc {
class Channel;
}

namespace tandem::bench {

struct RunResult {
  std::vector<RequestRecord> records;  // in request order
  int64_t duration_ns = 0;             // start of the run (the first arrival is one
                                       // gap after it) to the last completion
};

// What every request of a run carries besides its prompt and length.
struct RequestOptions {
  bool ignore_eos = false;
  std::optional<float> temperature;
  int64_t timeout_s = 600;
  std::string api_key;  // sent as "authorization: Bearer KEY" when set
};

class LoadRunner {
 public:
  LoadRunner(std::shared_ptr<grpc::Channel> channel, RequestOptions options);
  ~LoadRunner();
  LoadRunner(const LoadRunner&) = delete;
  LoadRunner& operator=(const LoadRunner&) = delete;

  // Runs `requests` at `point` (arrival times drawn from `arrival_seed`) and
  // returns when every stream has finished. Request i is named
  // "<id_prefix><i>" (the server echoes it in its logs).
  RunResult Run(const std::vector<BenchRequest>& requests, const LoadPoint& point, uint64_t arrival_seed,
                const std::string& id_prefix);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::bench
