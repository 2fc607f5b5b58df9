// Hand-made timing traces shared by the statistics tests, with the metrics
// worked out by hand beside each (milliseconds; 1 ms = 1'000'000 ns).
#pragma once

#include "bench/load/request_metrics.h"

namespace tandem::bench::testing {

constexpr int64_t kMs = 1'000'000;

// Start 0; chunks of 1, 1, 3, 0 tokens at 10, 30, 60, 100 ms; end 110 ms.
//   output 5, TTFT 10, ITL [20, 10, 10, 10] (30 ms over 3 tokens), E2E 110,
//   TPOT (110 - 10) / 4 = 25.
inline RequestTrace TraceA() {
  return {0, 110 * kMs, {{10 * kMs, 1}, {30 * kMs, 1}, {60 * kMs, 3}, {100 * kMs, 0}}};
}

// Start 5; chunks of 2, 2 tokens at 25, 45 ms; end 45 ms.
//   output 4, TTFT 20, ITL [0, 10, 10] (the first chunk's second token came
//   with the first), E2E 40, TPOT (40 - 20) / 3 = 20/3.
inline RequestTrace TraceB() {
  return {5 * kMs, 45 * kMs, {{25 * kMs, 2}, {45 * kMs, 2}}};
}

// Start 0; one chunk of 1 token at 8 ms; end 9 ms.
//   output 1, TTFT 8, no ITL, E2E 9, no TPOT.
inline RequestTrace TraceC() { return {0, 9 * kMs, {{8 * kMs, 1}}}; }

}  // namespace tandem::bench::testing
