#include "bench/sim/planner.h"

namespace tandem::sim {

Plan PlanSplits(const SimConfig& base, const std::vector<SimRequest>& requests, int total_workers, const Slo& slo) {
  Plan plan;
  for (int p = 1; p < total_workers; ++p) {
    SimConfig c = base;
    c.num_prefill = p;
    c.num_decode = total_workers - p;
    plan.rows.push_back({p, total_workers - p, Summarize(Simulate(c, requests), slo)});
    const SimSummary& s = plan.rows.back().summary;
    if (plan.best < 0) {
      plan.best = 0;
      continue;
    }
    const SimSummary& b = plan.rows[plan.best].summary;
    if (s.goodput > b.goodput || (s.goodput == b.goodput && s.attainment > b.attainment)) {
      plan.best = static_cast<int>(plan.rows.size()) - 1;
    }
  }
  return plan;
}

}  // namespace tandem::sim
