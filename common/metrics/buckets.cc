// Bucket layout helpers (see buckets.h). Stateless.
#include "common/metrics/buckets.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace tandem::metrics {
namespace {

constexpr int kMaxBuckets = 1000;  // far beyond any useful histogram; bounds the series count

}  // namespace

absl::Status ValidateBucketBounds(std::span<const double> bounds) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("bucket bound ", i, " is ", bounds[i], ": bounds must be finite (+Inf is implicit)"));
    }
    if (i > 0 && !(bounds[i] > bounds[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("bucket bound ", i, " (", bounds[i],
                                                     ") is not greater than the one before (", bounds[i - 1], ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !std::isfinite(start)) return absl::InvalidArgumentError("exponential buckets: start must be > 0");
  if (!(factor > 1) || !std::isfinite(factor)) {
    return absl::InvalidArgumentError("exponential buckets: factor must be > 1");
  }
  if (count < 1 || count > kMaxBuckets) {
    return absl::InvalidArgumentError(absl::StrCat("exponential buckets: count must be in [1, ", kMaxBuckets, "]"));
  }
  std::vector<double> out;
  out.reserve(count);
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) {
    if (!std::isfinite(bound)) return absl::InvalidArgumentError("exponential buckets: bounds overflow");
    if (!out.empty() && !(bound > out.back())) {
      return absl::InvalidArgumentError("exponential buckets: bounds not increasing (precision)");
    }
    out.push_back(bound);
  }
  return out;
}

absl::StatusOr<std::vector<double>> LinearBuckets(double start, double width, int count) {
  if (!std::isfinite(start)) return absl::InvalidArgumentError("linear buckets: start must be finite");
  if (!(width > 0) || !std::isfinite(width)) return absl::InvalidArgumentError("linear buckets: width must be > 0");
  if (count < 1 || count > kMaxBuckets) {
    return absl::InvalidArgumentError(absl::StrCat("linear buckets: count must be in [1, ", kMaxBuckets, "]"));
  }
  std::vector<double> out;
  out.reserve(count);
  // start + i*width rather than repeated addition: no accumulated rounding.
  for (int i = 0; i < count; ++i) {
    const double bound = start + i * width;
    if (!std::isfinite(bound)) return absl::InvalidArgumentError("linear buckets: bounds overflow");
    if (!out.empty() && !(bound > out.back())) {
      return absl::InvalidArgumentError("linear buckets: bounds not increasing (width too small for start)");
    }
    out.push_back(bound);
  }
  return out;
}

}  // namespace tandem::metrics
