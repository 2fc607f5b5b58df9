// RequestBackend: how the load runner sends one benchmark request and gets
// its timing record back. Two implementations: gRPC Generation.Generate
// streams (grpc_backend.h, GenerateCall) and OpenAI-compatible HTTP
// /v1/completions streams (openai_call.h, OpenAiCall on one HttpLoop thread).
// Thread-safety: Start may be called from the dispatcher thread while earlier
// requests run; `done` is called once per request, from a backend thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "bench/load/dataset.h"
#include "bench/load/report.h"

namespace tandem::bench {

// What every request of a run carries besides its prompt and length.
struct RequestOptions {
  bool ignore_eos = false;
  std::optional<float> temperature;
  int64_t timeout_s = 600;
  std::string api_key;  // sent as "authorization: Bearer KEY" when set
};

class RequestBackend {
 public:
  using Clock = std::chrono::steady_clock;

  virtual ~RequestBackend() = default;
  // Sends `request` now. Fills `record` (its trace's times are nanoseconds
  // since `epoch`; start_ns is stamped before anything is sent; one
  // ChunkArrival per response chunk or event; status, usage, finish reason),
  // then calls `done`. `record` and what `done` touches must outlive it.
  virtual void Start(const BenchRequest& request, const std::string& request_id, Clock::time_point epoch,
                     RequestRecord* record, std::function<void()> done) = 0;
};

}  // namespace tandem::bench
