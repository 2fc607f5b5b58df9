// LoadRunner: sends a list of benchmark requests through a RequestBackend
// (gRPC Generate streams or OpenAI-compatible HTTP streams) on an arrival
// schedule with an optional cap on requests in flight, and collects one
// RequestRecord per request.
//
// The calling thread is the dispatcher: it sleeps until each arrival time,
// waits for a free slot when capped, and starts the request on the backend;
// the backend's threads (gRPC's callback threads, or the one HTTP loop
// thread) run the streams and only record and signal, never block.
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
#include "bench/load/request_backend.h"

namespace tandem::bench {

struct RunResult {
  std::vector<RequestRecord> records;  // in request order
  int64_t duration_ns = 0;             // start of the run (the first arrival is one
                                       // gap after it) to the last completion
};

class LoadRunner {
 public:
  explicit LoadRunner(std::unique_ptr<RequestBackend> backend);
  ~LoadRunner();
  LoadRunner(const LoadRunner&) = delete;
  LoadRunner& operator=(const LoadRunner&) = delete;

  // Runs `requests` at `point` (arrival times drawn from `arrival_seed`) and
  // returns when every stream has finished. Request i is named
  // "<id_prefix><i>" (a gRPC server echoes it in its logs).
  // Multi-turn requests (BenchRequest::conversation >= 0, each conversation's
  // turns consecutive and in order): conversations arrive on the schedule
  // (one arrival each) and their turns go one after another, each as soon
  // as the one before finished, its prompt that turn's prompt and output
  // followed by its own message. A turn that fails ends its conversation:
  // the turns left are recorded ABORTED, never sent.
  RunResult Run(const std::vector<BenchRequest>& requests, const LoadPoint& point, uint64_t arrival_seed,
                const std::string& id_prefix);

 private:
  RunResult RunConversations(const std::vector<BenchRequest>& requests, const LoadPoint& point,
                             uint64_t arrival_seed, const std::string& id_prefix);

  std::unique_ptr<RequestBackend> backend_;
};

}  // namespace tandem::bench
