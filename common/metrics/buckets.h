// Histogram bucket presets for LLM serving latencies, in seconds (Prometheus's
// base unit), and helpers to build and check other layouts: what
// prometheus-cpp does not have (its Histogram takes any sorted vector and
// checks neither finiteness nor NaN).
//
// Why these bounds: time to first token spans a cached short prompt on a GPU
// (~1 ms) to a long prompt queued behind others on a CPU (tens of seconds);
// inter-token latency is a few ms on a GPU and up to seconds on a loaded CPU.
// The bounds are dense where SLOs are usually drawn (10 ms – 1 s) and roughly
// 1-2.5-5 per decade elsewhere, so histogram_quantile stays within a factor
// of ~2 across the whole range with few series.
// Thread-safety: constants and stateless functions.
#pragma once

#include <array>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "prometheus/histogram.h"

namespace tandem::metrics {

// Time to first token: 1 ms .. 60 s.
inline constexpr std::array<double, 19> kTtftBucketsSeconds = {
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25,
    0.5,   0.75,   1.0,   2.5,  5.0,  7.5,  10.0, 30.0, 60.0};

// Inter-token latency (time per output token): 1 ms .. 5 s.
inline constexpr std::array<double, 19> kItlBucketsSeconds = {
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
    0.05,  0.075,  0.1,   0.15,   0.2,  0.3,   0.5,  1.0,   5.0};

// End-to-end request latency: 10 ms .. 10 min (long generations on a CPU).
inline constexpr std::array<double, 18> kE2eLatencyBucketsSeconds = {
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5,  1.0,   2.5,   5.0,
    10.0, 15.0,  20.0, 30.0, 40.0, 60.0, 120.0, 300.0, 600.0};

// Time in the router's or an engine's queue: 1 ms .. 60 s.
inline constexpr std::array<double, 14> kQueueTimeBucketsSeconds = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0};

// One KV transfer (a prompt's blocks, flush included): 100 µs .. 10 s.
inline constexpr std::array<double, 16> kKvTransferBucketsSeconds = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};

// Token counts per request (prompt or output length): 1 .. 32768, powers of 2.
inline constexpr std::array<double, 16> kTokenCountBuckets = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};

// A preset (or any bounds) as prometheus-cpp's bucket type, for
// Family<Histogram>::Add(labels, Buckets(kTtftBucketsSeconds)).
inline prometheus::Histogram::BucketBoundaries Buckets(std::span<const double> bounds) {
  return prometheus::Histogram::BucketBoundaries(bounds.begin(), bounds.end());
}

// Bucket upper bounds must be finite and strictly increasing (the +Inf bucket
// is implicit). Empty is allowed: then only +Inf, _sum and _count.
// InvalidArgument names the first offending bound.
[[nodiscard]] absl::Status ValidateBucketBounds(std::span<const double> bounds);

// `count` bounds start, start*factor, ...; InvalidArgument unless start > 0,
// factor > 1 and 1 <= count <= 1000.
absl::StatusOr<std::vector<double>> ExponentialBuckets(double start, double factor, int count);

// `count` bounds start, start+width, ...; InvalidArgument unless width > 0
// and 1 <= count <= 1000.
absl::StatusOr<std::vector<double>> LinearBuckets(double start, double width, int count);

}  // namespace tandem::metrics
