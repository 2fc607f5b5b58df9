// When `tandem up` restarts a cluster member that exited: after a backoff
// that doubles with each quick failure (so a worker that cannot start does
// not spin), and at most `max_restarts` times in any `window` (then the
// launcher gives up and stops the cluster). A member that stayed up for
// `stable_after` has its backoff reset: one crash a day restarts at once.
// Time is passed in, so the policy is tested with a fake clock.
// Thread-safety: one owner.
#pragma once

#include <chrono>
#include <deque>
#include <optional>

namespace tandem::cli {

struct RestartPolicy {
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{30000};
  int max_restarts = 5;  // in any `window`; 0: never restart
  std::chrono::milliseconds window{60000};
  std::chrono::milliseconds stable_after{60000};
};

class RestartBudget {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RestartBudget(RestartPolicy policy) : policy_(policy) {}

  // The member (started at `started`) exited at `now`: how long to wait
  // before restarting it, or nullopt when the budget is spent.
  std::optional<std::chrono::milliseconds> OnExit(Clock::time_point started, Clock::time_point now);

  // Restarts granted within the window that ends at `now`.
  int RestartsInWindow(Clock::time_point now);

 private:
  void Forget(Clock::time_point now);

  const RestartPolicy policy_;
  std::deque<Clock::time_point> restarts_;  // when each granted restart was decided
  std::chrono::milliseconds next_backoff_{0};
};

}  // namespace tandem::cli
