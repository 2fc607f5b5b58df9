// Counter and Gauge: one atomic double each, so the hot path (Increment, Set)
// is a single lock-free atomic operation and never blocks a gRPC reactor.
// Thread-safety: every method may be called from any thread at any time.
#pragma once

#include <atomic>
#include <string>

#include "absl/strings/string_view.h"
#include "common/metrics/labels.h"
#include "common/metrics/text_format.h"

namespace tandem::metrics {

// A value that only goes up (requests, tokens, bytes, seconds spent).
class Counter {
 public:
  static constexpr absl::string_view kType = "counter";

  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  // Adds `amount`. A negative or NaN amount is ignored: a counter that went
  // down would read as a process restart to Prometheus's rate().
  void Increment(double amount = 1.0) {
    if (!(amount >= 0.0)) return;
    value_.fetch_add(amount, std::memory_order_relaxed);
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

  // Writes this child's sample line (called by its family at scrape time).
  void AppendTo(absl::string_view name, const Labels& labels, std::string* out) const {
    AppendSample(name, labels, Value(), out);
  }

 private:
  // Integral increments sum exactly up to 2^53, whatever the thread interleaving.
  std::atomic<double> value_{0.0};
};

// A value that goes up and down (running requests, KV blocks in use).
class Gauge {
 public:
  static constexpr absl::string_view kType = "gauge";

  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double amount = 1.0) { value_.fetch_add(amount, std::memory_order_relaxed); }
  void Decrement(double amount = 1.0) { value_.fetch_sub(amount, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

  void AppendTo(absl::string_view name, const Labels& labels, std::string* out) const {
    AppendSample(name, labels, Value(), out);
  }

 private:
  std::atomic<double> value_{0.0};
};

}  // namespace tandem::metrics
