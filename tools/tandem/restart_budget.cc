#include "tools/tandem/restart_budget.h"

#include <algorithm>

namespace tandem::cli {

void RestartBudget::Forget(Clock::time_point now) {
  while (!restarts_.empty() && now - restarts_.front() >= policy_.window) restarts_.pop_front();
}

int RestartBudget::RestartsInWindow(Clock::time_point now) {
  Forget(now);
  return static_cast<int>(restarts_.size());
}

std::optional<std::chrono::milliseconds> RestartBudget::OnExit(Clock::time_point started, Clock::time_point now) {
  Forget(now);
  if (static_cast<int>(restarts_.size()) >= policy_.max_restarts) return std::nullopt;
  if (next_backoff_.count() == 0 || now - started >= policy_.stable_after) {
    next_backoff_ = policy_.initial_backoff;
  }
  const std::chrono::milliseconds delay = next_backoff_;
  next_backoff_ = std::min(next_backoff_ * 2, policy_.max_backoff);
  restarts_.push_back(now);
  return delay;
}

}  // namespace tandem::cli
