#include "bench/load/arrivals.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "bench/load/rng.h"

namespace tandem::bench {

absl::Status ArrivalConfig::Validate() const {
  if (!(request_rate > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--request-rate must be > 0 (or inf), got ", request_rate));
  }
  if (!(burstiness > 0) || std::isinf(burstiness)) {
    return absl::InvalidArgumentError(absl::StrCat("--burstiness must be > 0 and finite, got ", burstiness));
  }
  return absl::OkStatus();
}

std::vector<double> ArrivalOffsets(const ArrivalConfig& config, int64_t n, uint64_t seed) {
  std::vector<double> out(static_cast<size_t>(std::max<int64_t>(n, 0)), 0.0);
  if (std::isinf(config.request_rate)) return out;
  Rng rng(seed);
  const double scale = 1.0 / (config.request_rate * config.burstiness);
  double t = 0;
  for (double& offset : out) {
    t += rng.Gamma(config.burstiness, scale);
    offset = t;
  }
  return out;
}

}  // namespace tandem::bench
