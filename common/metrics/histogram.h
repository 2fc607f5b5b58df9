// Histogram: counts of observations per bucket (explicit upper bounds), their
// sum and count, written as Prometheus's cumulative _bucket{le=...} lines.
//
// Why lock-free rather than a mutex: Observe is called from gRPC reactors
// (router latencies) and from the engine loop (per token), and reactors must
// never wait on a lock (STYLE.md, threads). Observe is a binary search plus
// two relaxed atomic adds: the bucket's own (non-cumulative) count and the sum.
// There is no separate count: a scrape reads every bucket once and derives
// the cumulative counts and _count from those same reads, so _count always
// equals the +Inf bucket and buckets never decrease. Only _sum is read
// separately and may include an observation whose bucket was not yet read
// (or miss one), which is off by at most the observations in flight.
//
// Thread-safety: Observe and Collect may be called from any thread at any time.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/metrics/labels.h"

namespace tandem::metrics {

// Bucket upper bounds must be finite and strictly increasing (the +Inf bucket
// is implicit). Empty is allowed: then only +Inf, _sum and _count.
// InvalidArgument names the first offending bound.
[[nodiscard]] absl::Status ValidateBucketBounds(std::span<const double> bounds);

class Histogram {
 public:
  static constexpr absl::string_view kType = "histogram";

  // What a scrape sees: cumulative[i] counts observations <= bounds[i], the
  // last entry (index bounds.size()) counts all of them (+Inf).
  struct Snapshot {
    std::vector<uint64_t> cumulative;
    double sum = 0;
    uint64_t count = 0;
  };

  // `bounds` must pass ValidateBucketBounds (the family checks it once).
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Counts `value` in the first bucket whose bound is >= value (Prometheus's
  // "le"). NaN is counted in +Inf only, and makes _sum NaN.
  void Observe(double value);

  Snapshot Collect() const;
  const std::vector<double>& bounds() const { return bounds_; }

  void AppendTo(absl::string_view name, const Labels& labels, std::string* out) const;

 private:
  const std::vector<double> bounds_;
  // Non-cumulative counts, one per bound plus +Inf: [bounds_.size() + 1].
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0.0};
};

}  // namespace tandem::metrics
