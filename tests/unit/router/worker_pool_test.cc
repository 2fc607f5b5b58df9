// WorkerPool's readiness and draining, on a fake clock: Ready() needs a live,
// non-draining worker of each role; registrations expire after kStaleAfter
// without a heartbeat; a draining worker is never picked. (No RPC is made:
// channels connect lazily and nothing here calls a worker.)
#include "router/worker_pool.h"

#include <gtest/gtest.h>

namespace tandem {
namespace {

constexpr auto kPrefill = v1::WORKER_ROLE_PREFILL;
constexpr auto kDecode = v1::WORKER_ROLE_DECODE;

class WorkerPoolTest : public ::testing::Test {
 protected:
  std::chrono::steady_clock::time_point now_{std::chrono::hours(1)};
  WorkerPool pool_{[this] { return now_; }};
};

TEST_F(WorkerPoolTest, ReadyNeedsALiveWorkerOfEachRole) {
  EXPECT_FALSE(pool_.Ready());
  pool_.Add(kPrefill, "p0", "127.0.0.1:1", /*registered=*/true);
  EXPECT_FALSE(pool_.Ready());
  pool_.Add(kDecode, "d0", "127.0.0.1:2", /*registered=*/true);
  EXPECT_TRUE(pool_.Ready());
}

TEST_F(WorkerPoolTest, ARestartedWorkerAtANewAddressReplacesItsOldEntry) {
  pool_.Add(kDecode, "d0", "127.0.0.1:2", /*registered=*/true);
  pool_.Add(kDecode, "d1", "127.0.0.1:3", /*registered=*/true);
  auto held = pool_.Acquire(kDecode);  // d0 (ties go to the first), one call in flight
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->id, "d0");
  pool_.Add(kDecode, "d0", "127.0.0.1:7", /*registered=*/true);  // d0 restarted on another port
  EXPECT_EQ(pool_.NumWorkers(kDecode), 2);
  // d0 still counts the old call, so d1 is picked; then d0, at its new address.
  auto a = pool_.Acquire(kDecode);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->id, "d1");
  pool_.Done(kDecode, "d0");
  pool_.Done(kDecode, "d1");
  auto b = pool_.Acquire(kDecode, {"d1"});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->id, "d0");
  EXPECT_EQ(b->address, "127.0.0.1:7");
  // A static worker never takes over another's entry by id.
  pool_.Add(kPrefill, "s0", "127.0.0.1:4");
  pool_.Add(kPrefill, "s0", "127.0.0.1:5");
  EXPECT_EQ(pool_.NumWorkers(kPrefill), 2);
}

TEST_F(WorkerPoolTest, ExpiredRegistrationIsNotReadyUntilItsNextHeartbeat) {
  pool_.Add(kPrefill, "p0", "127.0.0.1:1", true);
  pool_.Add(kDecode, "d0", "127.0.0.1:2", true);
  now_ += WorkerPool::kStaleAfter;  // exactly kStaleAfter old: still live
  EXPECT_TRUE(pool_.Ready());
  pool_.Add(kPrefill, "p0", "127.0.0.1:1", true);  // p0's heartbeat; d0 stops beating
  now_ += std::chrono::milliseconds(1);
  EXPECT_FALSE(pool_.Ready());
  ASSERT_EQ(pool_.List().size(), 1u);
  EXPECT_EQ(pool_.List()[0].worker_id(), "p0");
  pool_.Add(kDecode, "d0", "127.0.0.1:2", true);  // d0 is back
  EXPECT_TRUE(pool_.Ready());
}

TEST_F(WorkerPoolTest, StaticWorkersNeverExpire) {
  pool_.Add(kPrefill, "prefill-static-0", "127.0.0.1:1");
  pool_.Add(kDecode, "decode-static-1", "127.0.0.1:2");
  now_ += std::chrono::hours(24);
  EXPECT_TRUE(pool_.Ready());
}

TEST_F(WorkerPoolTest, DrainingWorkerIsNeverPickedAndDoesNotMakeTheRouterReady) {
  pool_.Add(kPrefill, "p0", "127.0.0.1:1", true);
  pool_.Add(kDecode, "d0", "127.0.0.1:2", true);
  pool_.Add(kDecode, "d1", "127.0.0.1:3", true);
  absl::StatusOr<WorkerHandle> busy = pool_.Acquire(kDecode);  // d0 (first on a tie) now has one in flight
  ASSERT_TRUE(busy.ok());
  EXPECT_EQ(busy->id, "d0");
  pool_.Add(kDecode, "d1", "127.0.0.1:3", true, /*draining=*/true);
  for (int i = 0; i < 3; ++i) {  // d1 is idle, but draining: d0 takes everything
    absl::StatusOr<WorkerHandle> w = pool_.Acquire(kDecode);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(w->id, "d0");
  }
  EXPECT_TRUE(pool_.Ready());
  pool_.Add(kDecode, "d0", "127.0.0.1:2", true, /*draining=*/true);
  EXPECT_FALSE(pool_.Ready());
  absl::StatusOr<WorkerHandle> none = pool_.Acquire(kDecode);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable) << none.status();
  // Draining workers are still listed (flagged): their streams are still running.
  std::vector<v1::WorkerInfo> listed = pool_.List();
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_FALSE(listed[0].draining());
  EXPECT_TRUE(listed[1].draining());
  EXPECT_EQ(listed[1].requests_in_flight(), 4u);
  EXPECT_TRUE(listed[2].draining());
  // A worker that registers without the flag (restarted) takes work again.
  pool_.Add(kDecode, "d1", "127.0.0.1:3", true);
  EXPECT_TRUE(pool_.Ready());
  absl::StatusOr<WorkerHandle> w = pool_.Acquire(kDecode);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->id, "d1");
}

TEST_F(WorkerPoolTest, FailedWorkerStillCountsAsReady) {
  // A cooldown after one UNAVAILABLE avoids the worker while others exist;
  // it does not flip readiness (the registration heartbeat decides liveness).
  pool_.Add(kPrefill, "p0", "127.0.0.1:1", true);
  pool_.Add(kDecode, "d0", "127.0.0.1:2", true);
  pool_.MarkFailed(kDecode, "d0");
  EXPECT_TRUE(pool_.Ready());
}

}  // namespace
}  // namespace tandem
