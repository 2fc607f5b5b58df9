// RestartBudget: `tandem up`'s restart policy on a fake clock.
#include "tools/tandem/restart_budget.h"

#include "gtest/gtest.h"

namespace tandem::cli {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Time = RestartBudget::Clock::time_point;

TEST(RestartBudgetTest, BackoffDoublesForQuickFailuresUpToItsCap) {
  RestartPolicy p;
  p.initial_backoff = milliseconds(500);
  p.max_backoff = milliseconds(3000);
  p.max_restarts = 100;
  RestartBudget budget(p);
  Time t{};
  std::vector<int64_t> delays;
  for (int i = 0; i < 6; ++i) {
    auto d = budget.OnExit(t, t + seconds(1));  // each run lasted one second
    ASSERT_TRUE(d.has_value());
    delays.push_back(d->count());
    t += seconds(1) + *d;
  }
  EXPECT_EQ(delays, (std::vector<int64_t>{500, 1000, 2000, 3000, 3000, 3000}));
}

TEST(RestartBudgetTest, AStableRunResetsTheBackoff) {
  RestartPolicy p;
  p.stable_after = seconds(60);
  RestartBudget budget(p);
  Time t{};
  EXPECT_EQ(budget.OnExit(t, t + seconds(1))->count(), 500);
  EXPECT_EQ(budget.OnExit(t + seconds(2), t + seconds(3))->count(), 1000);
  // Up for 60 s this time: the next restart is immediate-ish again.
  EXPECT_EQ(budget.OnExit(t + seconds(4), t + seconds(64))->count(), 500);
}

TEST(RestartBudgetTest, AtMostMaxRestartsInAnyWindowThenGivesUp) {
  RestartPolicy p;
  p.max_restarts = 3;
  p.window = seconds(60);
  RestartBudget budget(p);
  Time t{};
  EXPECT_TRUE(budget.OnExit(t, t + seconds(1)).has_value());
  EXPECT_TRUE(budget.OnExit(t, t + seconds(2)).has_value());
  EXPECT_TRUE(budget.OnExit(t, t + seconds(3)).has_value());
  EXPECT_EQ(budget.RestartsInWindow(t + seconds(3)), 3);
  EXPECT_FALSE(budget.OnExit(t, t + seconds(4)).has_value());
  // The first restart leaves the window at 61 s: one more is allowed.
  EXPECT_FALSE(budget.OnExit(t, t + milliseconds(60999)).has_value());
  EXPECT_TRUE(budget.OnExit(t, t + seconds(61)).has_value());
  EXPECT_EQ(budget.RestartsInWindow(t + seconds(61)), 3);
}

TEST(RestartBudgetTest, ZeroRestartsNeverRestarts) {
  RestartPolicy p;
  p.max_restarts = 0;
  RestartBudget budget(p);
  EXPECT_FALSE(budget.OnExit(Time{}, Time{} + seconds(100)).has_value());
}

}  // namespace
}  // namespace tandem::cli
