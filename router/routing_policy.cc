#include "router/routing_policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem {

absl::StatusOr<RoutingMode> ParseRoutingMode(std::string_view name) {
  if (name == "kv-aware") return RoutingMode::kKvAware;
  if (name == "least-loaded") return RoutingMode::kLeastLoaded;
  if (name == "round-robin") return RoutingMode::kRoundRobin;
  return absl::InvalidArgumentError(
      absl::StrCat("--routing: '", std::string(name), "' is not one of kv-aware, least-loaded, round-robin"));
}

std::string RoutingModeName(RoutingMode mode) {
  switch (mode) {
    case RoutingMode::kKvAware: return "kv-aware";
    case RoutingMode::kLeastLoaded: return "least-loaded";
    case RoutingMode::kRoundRobin: return "round-robin";
  }
  return "?";
}

double RoutingPolicy::Cost(const RoutingCandidate& c, int64_t prompt_blocks) const {
  const int64_t to_compute = std::max<int64_t>(prompt_blocks - c.cached_blocks, 0);
  return kv_weight_ * static_cast<double>(to_compute) + static_cast<double>(c.in_flight_blocks);
}

int RoutingPolicy::Choose(const std::vector<RoutingCandidate>& candidates, int64_t prompt_blocks) {
  if (candidates.empty()) return -1;
  const int n = static_cast<int>(candidates.size());
  switch (mode_) {
    case RoutingMode::kRoundRobin:
      return static_cast<int>(turn_.fetch_add(1) % static_cast<uint64_t>(n));
    case RoutingMode::kLeastLoaded: {
      int best = 0;
      for (int i = 1; i < n; ++i) {
        if (candidates[i].in_flight < candidates[best].in_flight) best = i;
      }
      return best;
    }
    case RoutingMode::kKvAware: {
      int best = 0;
      double best_cost = Cost(candidates[0], prompt_blocks);
      for (int i = 1; i < n; ++i) {
        const double cost = Cost(candidates[i], prompt_blocks);
        if (cost < best_cost) {
          best = i;
          best_cost = cost;
        }
      }
      return best;
    }
  }
  return 0;
}

}  // namespace tandem
