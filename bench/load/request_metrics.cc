#include "bench/load/request_metrics.h"

namespace tandem::bench {
namespace {

double Ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

}  // namespace

RequestMetrics ComputeRequestMetrics(const RequestTrace& trace) {
  RequestMetrics m;
  m.e2e_ms = Ms(trace.end_ns - trace.start_ns);
  std::optional<int64_t> last_token_ns;
  for (const ChunkArrival& chunk : trace.chunks) {
    if (chunk.num_tokens <= 0) continue;
    if (!last_token_ns) {
      m.ttft_ms = Ms(chunk.arrival_ns - trace.start_ns);
      m.itls_ms.insert(m.itls_ms.end(), static_cast<size_t>(chunk.num_tokens - 1), 0.0);
    } else {
      const double share = Ms(chunk.arrival_ns - *last_token_ns) / static_cast<double>(chunk.num_tokens);
      m.itls_ms.insert(m.itls_ms.end(), static_cast<size_t>(chunk.num_tokens), share);
    }
    last_token_ns = chunk.arrival_ns;
    m.output_tokens += chunk.num_tokens;
  }
  if (m.ttft_ms && m.output_tokens >= 2) {
    m.tpot_ms = (m.e2e_ms - *m.ttft_ms) / static_cast<double>(m.output_tokens - 1);
  }
  return m;
}

}  // namespace tandem::bench
