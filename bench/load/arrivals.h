// Arrival schedules: when each benchmark request is sent, relative to the start.
//
// Open-loop load as vLLM's benchmark_serving draws it: inter-arrival gaps are
// Gamma(shape = burstiness, scale = 1 / (rate * burstiness)), so the mean gap
// is always 1 / rate; burstiness 1 is a Poisson process, < 1 burstier, > 1
// more regular. An infinite rate sends everything at time 0 (the closed-loop
// --concurrency mode uses that with a cap on requests in flight).
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace tandem::bench {

struct ArrivalConfig {
  // Requests per second; +infinity = all at once. Must be > 0.
  double request_rate = 0;
  // Gamma shape of the gaps; 1 = Poisson. Must be > 0 and finite.
  double burstiness = 1.0;

  absl::Status Validate() const;
};

// The send time of each of `n` requests in seconds from the start: the first
// request is sent after one gap (as the gaps are i.i.d., a schedule starting
// with a gap is the stationary process), and times never decrease.
// Deterministic per (config, seed). Requires config.Validate().ok().
std::vector<double> ArrivalOffsets(const ArrivalConfig& config, int64_t n, uint64_t seed);

// Arrival times get their own stream so that they do not shift when the
// dataset draws more or fewer numbers.
// The arrival seed of a run's measured requests for dataset seed `seed`
// (tandem-bench; tandem-sim draws the same arrivals); warmup uses it + 1.
inline uint64_t MeasuredArrivalSeed(uint64_t seed) { return seed ^ 0x9e3779b97f4a7c15ULL; }

}  // namespace tandem::bench
