// Readiness: publishes the current value on Attach, then only changes, in
// order: workers arriving, a registration expiring, a draining worker, the
// router draining (NOT_SERVING for good).
#include "router/readiness.h"

#include <gtest/gtest.h>

#include <vector>

namespace tandem {
namespace {

constexpr auto kPrefill = v1::WORKER_ROLE_PREFILL;
constexpr auto kDecode = v1::WORKER_ROLE_DECODE;

TEST(ReadinessTest, PublishesOnAttachThenOnlyChanges) {
  std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
  WorkerPool pool([&now] { return now; });
  DrainGate gate;
  Readiness readiness(&pool, &gate);
  std::vector<bool> published;
  EXPECT_FALSE(readiness.Update());  // not attached: computes, publishes nothing
  readiness.Attach([&published](bool ready) { published.push_back(ready); });
  EXPECT_EQ(published, std::vector<bool>({false}));

  pool.Add(kPrefill, "p0", "127.0.0.1:1", true);
  EXPECT_FALSE(readiness.Update());
  pool.Add(kDecode, "d0", "127.0.0.1:2", true);
  EXPECT_TRUE(readiness.Update());
  EXPECT_TRUE(readiness.Update());  // unchanged: not published again
  EXPECT_EQ(published, std::vector<bool>({false, true}));

  now += WorkerPool::kStaleAfter + std::chrono::milliseconds(1);  // no heartbeats: both expire
  EXPECT_FALSE(readiness.Update());
  pool.Add(kPrefill, "p0", "127.0.0.1:1", true);
  pool.Add(kDecode, "d0", "127.0.0.1:2", true);
  EXPECT_TRUE(readiness.Update());
  pool.Add(kDecode, "d0", "127.0.0.1:2", true, /*draining=*/true);
  EXPECT_FALSE(readiness.Update());
  pool.Add(kDecode, "d1", "127.0.0.1:3", true);
  EXPECT_TRUE(readiness.Update());
  EXPECT_EQ(published, std::vector<bool>({false, true, false, true, false, true}));

  gate.StartDraining();  // the router's own SIGTERM: workers no longer matter
  EXPECT_FALSE(readiness.Update());
  pool.Add(kDecode, "d2", "127.0.0.1:4", true);
  EXPECT_FALSE(readiness.Update());
  EXPECT_EQ(published, std::vector<bool>({false, true, false, true, false, true, false}));
}

}  // namespace
}  // namespace tandem
