// Per-request latency metrics from the timing trace of one Generate stream.
//
// The client stamps every chunk with its arrival time; a chunk may carry
// several tokens (the server batches what it produced since the last write)
// or none (a final chunk carrying only finish_reason and usage).
//
//   TTFT  first chunk carrying a token - request start.
//   E2E   stream end (the OK status read) - request start.
//   TPOT  (E2E - TTFT) / (output_tokens - 1); absent with one output token
//         (vLLM's definition).
//   ITL   one sample per output token after the first. A chunk of k tokens
//         arriving g after the previous token-carrying chunk gives k samples
//         of g / k: the gap is spread evenly over its tokens, as vLLM's
//         benchmark does for multi-token chunks, so a server that writes in
//         bursts is not credited with zero-latency tokens, nor charged one
//         long gap for a whole burst. The k - 1 tokens that share the first
//         chunk arrived with the first token: they give samples of 0. So
//         there are always output_tokens - 1 samples, summing to the time
//         from the first to the last token-carrying chunk.
//
// Times are int64 nanoseconds from any fixed epoch; metrics are milliseconds.
// Thread-safety: plain structs and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace tandem::bench {

struct ChunkArrival {
  int64_t arrival_ns = 0;
  int64_t num_tokens = 0;  // token_ids_size() of the chunk
};

struct RequestTrace {
  int64_t start_ns = 0;  // when the call was started
  int64_t end_ns = 0;    // when its final status arrived
  std::vector<ChunkArrival> chunks;  // in arrival order
};

struct RequestMetrics {
  int64_t output_tokens = 0;
  std::optional<double> ttft_ms;  // absent when no token arrived
  double e2e_ms = 0;
  std::optional<double> tpot_ms;  // absent unless output_tokens >= 2
  std::vector<double> itls_ms;    // output_tokens - 1 samples (none without tokens)
};

RequestMetrics ComputeRequestMetrics(const RequestTrace& trace);

}  // namespace tandem::bench
