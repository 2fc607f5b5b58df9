// The JSON that --json-out writes: the configuration, and per load point its
// report (ReportToJson), warmup counts and, with --json-detailed, every
// request. Field names are documented in docs/bench.md.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "bench/load/bench_config.h"
#include "bench/load/report.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {

struct PointResult {
  LoadPoint point;
  int64_t warmup_completed = 0;
  int64_t warmup_failed = 0;
  BenchReport report;
  std::vector<RequestRecord> records;  // the measured requests
};

nlohmann::json ConfigToJson(const BenchConfig& config);

// The report's fields plus label, request_rate ("inf" or a number),
// max_concurrency, warmup_completed, warmup_failed and, when `detailed`,
// "requests".
nlohmann::json PointToJson(const PointResult& result, bool detailed);

}  // namespace tandem::bench
