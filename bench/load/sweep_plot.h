// The PNG of a sweep: TTFT, TPOT and E2E latency percentiles (p50/p90/p99)
// against the achieved output-token throughput of each point, drawn by
// gnuplot (Debian's gnuplot-nox, found on PATH when the plot is made).
//
// The gnuplot script, data included, is kept beside the PNG (same stem, .gp)
// so a plot can be restyled and redrawn without rerunning the sweep.
// Thread-safety: pure functions apart from the files and the child process.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/load/report.h"

namespace tandem::bench {

struct SweepPoint {
  std::string label;  // LoadPoint::label
  BenchReport report;
};

// The gnuplot script that draws `points` into `png_path`.
std::string SweepPlotScript(const std::vector<SweepPoint>& points, const std::string& png_path);

// The first executable `name` in $PATH; NotFound otherwise.
absl::StatusOr<std::string> FindOnPath(const std::string& name);

// Writes <png stem>.gp and runs gnuplot on it. FailedPrecondition when gnuplot
// is not on PATH; Internal when it fails or leaves no PNG.
absl::Status WriteSweepPlot(const std::vector<SweepPoint>& points, const std::string& png_path);

}  // namespace tandem::bench
