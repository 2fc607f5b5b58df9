// How the router picks a worker among the healthy candidates of a role:
//   least-loaded  fewest requests in flight (the router's behaviour so far);
//   round-robin   each in turn;
//   kv-aware      lowest cost = weight x blocks the worker would have to
//                 compute (the prompt's blocks beyond the prefix it already
//                 holds, PrefixIndex) + blocks it is already working on
//                 (Dynamo's form). weight > 1 favours cache hits over load.
// Ties go to the earlier candidate. Pure choice over given numbers, so the
// unit tests script indexes and loads and check exact picks.
// Thread-safety: Choose() is thread-safe (round-robin's turn is atomic).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem {

enum class RoutingMode { kKvAware, kLeastLoaded, kRoundRobin };

// "kv-aware" | "least-loaded" | "round-robin"; InvalidArgument otherwise.
absl::StatusOr<RoutingMode> ParseRoutingMode(std::string_view name);
std::string RoutingModeName(RoutingMode mode);

struct RoutingCandidate {
  int64_t in_flight = 0;         // requests the router has on it
  int64_t in_flight_blocks = 0;  // their prompt blocks
  int64_t cached_blocks = 0;     // leading blocks of this prompt it holds
};

class RoutingPolicy {
 public:
  RoutingPolicy(RoutingMode mode, double kv_weight = 1.0) : mode_(mode), kv_weight_(kv_weight) {}

  RoutingMode mode() const { return mode_; }
  // The index of the chosen candidate for a prompt of `prompt_blocks`
  // blocks; -1 when there is none.
  int Choose(const std::vector<RoutingCandidate>& candidates, int64_t prompt_blocks);
  // kv-aware's cost of one candidate (lower is better).
  double Cost(const RoutingCandidate& c, int64_t prompt_blocks) const;

 private:
  const RoutingMode mode_;
  const double kv_weight_;
  std::atomic<uint64_t> turn_{0};
};

}  // namespace tandem
