// How a BenchReport is shown: a text table for the terminal and JSON for
// --json-out (the field names are the documented output format, see
// docs/bench.md).
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "bench/load/report.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {

// A multi-line table, vLLM benchmark_serving style; `title` heads it.
std::string FormatReportTable(const BenchReport& report, const std::string& title);

nlohmann::json ReportToJson(const BenchReport& report);

// One object per request (in dataset order), for --json-detailed.
nlohmann::json RecordsToJson(const std::vector<RequestRecord>& records);

}  // namespace tandem::bench
