// The planner: for a fixed number of workers, simulates every
// prefill:decode split of them on one workload and recommends the split
// with the most goodput (requests per second that meet the SLO; ties: the
// higher SLO attainment, then fewer prefill workers).
// Thread-safety: pure function.
#pragma once

#include <vector>

#include "bench/sim/cluster_sim.h"

namespace tandem::sim {

struct PlanRow {
  int prefill = 0;
  int decode = 0;
  SimSummary summary;
};

struct Plan {
  std::vector<PlanRow> rows;  // prefill = 1 .. workers - 1
  int best = -1;              // index into rows; -1 without rows
};

// `base` gives everything but the split. total_workers >= 2.
Plan PlanSplits(const SimConfig& base, const std::vector<SimRequest>& requests, int total_workers, const Slo& slo);

}  // namespace tandem::sim
