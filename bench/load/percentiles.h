// Summary statistics of a latency sample: mean and the p50/p90/p99 the
// benchmark reports.
//
// Percentiles interpolate linearly between the closest ranks, as numpy's
// default (and so vLLM's benchmark) does: with the n values sorted, the p-th
// percentile sits at position p/100 * (n - 1).
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

namespace tandem::bench {

// Requires 0 <= p <= 100 and a non-empty sample; `sorted` ascending.
double PercentileOfSorted(const std::vector<double>& sorted, double p);

struct LatencySummary {
  int64_t count = 0;  // samples; the other fields are 0 when count == 0
  double mean = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
};

LatencySummary Summarize(std::vector<double> values);

}  // namespace tandem::bench
