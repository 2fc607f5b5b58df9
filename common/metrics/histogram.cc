// Histogram (see histogram.h for why it is lock-free). Thread-safe.
#include "common/metrics/histogram.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/metrics/text_format.h"

namespace tandem::metrics {

absl::Status ValidateBucketBounds(std::span<const double> bounds) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("bucket bound ", i, " is ", FormatValue(bounds[i]), ": bounds must be finite (+Inf is implicit)"));
    }
    if (i > 0 && !(bounds[i] > bounds[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("bucket bound ", i, " (", FormatValue(bounds[i]),
                                                     ") is not greater than the one before (",
                                                     FormatValue(bounds[i - 1]), ")"));
    }
  }
  return absl::OkStatus();
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // lower_bound: the first bound >= value, i.e. the smallest "le" that holds it.
  const size_t bucket = std::isnan(value) ? bounds_.size()
                                          : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                                                bounds_.begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Collect() const {
  Snapshot s;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = running;
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

void Histogram::AppendTo(absl::string_view name, const Labels& labels, std::string* out) const {
  const Snapshot s = Collect();
  const std::string bucket = absl::StrCat(name, "_bucket");
  for (size_t i = 0; i < bounds_.size(); ++i) {
    AppendSample(bucket, labels, static_cast<double>(s.cumulative[i]), out, FormatValue(bounds_[i]));
  }
  AppendSample(bucket, labels, static_cast<double>(s.count), out, "+Inf");
  AppendSample(absl::StrCat(name, "_sum"), labels, s.sum, out);
  AppendSample(absl::StrCat(name, "_count"), labels, static_cast<double>(s.count), out);
}

}  // namespace tandem::metrics
