// WorkerPool's readiness and draining, on a fake clock: Ready() needs a live,
// non-draining worker of each role; registrations expire after kStaleAfter
// without a heartbeat; a draining worker is never picked. Incarnations: a
// restarted worker (same id, new incarnation or address) replaces its entry
// with nothing in flight, the old handles' Done/MarkFailed change nothing,
// and the gone listener hears of it exactly once. (No RPC is made:
// channels connect lazily and nothing here calls a worker.)
#include "router/worker_pool.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

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

// What the pool told its gone listener.
struct Gone {
  v1::WorkerRole role;
  std::string id, address, incarnation;
  uint64_t generation;
  bool operator==(const Gone&) const = default;
};

class WorkerPoolIncarnationTest : public WorkerPoolTest {
 protected:
  WorkerPoolIncarnationTest() {
    pool_.SetGoneListener([this](v1::WorkerRole role, const WorkerHandle& old) {
      gone_.push_back({role, old.id, old.address, old.incarnation, old.generation});
    });
  }
  int InFlight(const std::string& id) {
    for (const v1::WorkerInfo& w : pool_.List()) {
      if (w.worker_id() == id) return static_cast<int>(w.requests_in_flight());
    }
    return -1;
  }
  std::vector<Gone> gone_;
};

TEST_F(WorkerPoolIncarnationTest, ARestartedWorkerAtANewAddressReplacesItsOldEntry) {
  pool_.Add(kDecode, "d0", "127.0.0.1:2", /*registered=*/true, false, "aaaa");
  pool_.Add(kDecode, "d1", "127.0.0.1:3", /*registered=*/true, false, "bbbb");
  auto held = pool_.Acquire(kDecode);  // d0 (ties go to the first), one call in flight
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->id, "d0");
  EXPECT_EQ(held->incarnation, "aaaa");
  EXPECT_TRUE(gone_.empty());
  pool_.Add(kDecode, "d0", "127.0.0.1:7", /*registered=*/true, false, "cccc");  // d0 restarted on another port
  EXPECT_EQ(pool_.NumWorkers(kDecode), 2);
  EXPECT_EQ(gone_, (std::vector<Gone>{{kDecode, "d0", "127.0.0.1:2", "aaaa", held->generation}}));
  // The old call was the old process's: the new one starts with nothing in
  // flight, and is picked first again (a tie, listed first), at its new address.
  EXPECT_EQ(InFlight("d0"), 0);
  auto a = pool_.Acquire(kDecode);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->id, "d0");
  EXPECT_EQ(a->address, "127.0.0.1:7");
  EXPECT_EQ(a->incarnation, "cccc");
  EXPECT_NE(a->generation, held->generation);
  // The old call's Done and MarkFailed change nothing for the new incarnation.
  pool_.Done(kDecode, *held);
  pool_.MarkFailed(kDecode, *held);
  EXPECT_EQ(InFlight("d0"), 1);
  for (const WorkerPool::Health& h : pool_.AllHealth()) EXPECT_TRUE(h.up) << h.id;
  pool_.Done(kDecode, *a);
  EXPECT_EQ(InFlight("d0"), 0);
  pool_.Done(kDecode, *a);  // never below 0
  EXPECT_EQ(InFlight("d0"), 0);
  EXPECT_EQ(gone_.size(), 1u);
}

TEST_F(WorkerPoolIncarnationTest, ANewIncarnationAtTheSameAddressReplacesTheEntry) {
  pool_.Add(kDecode, "d0", "127.0.0.1:2", /*registered=*/true, false, "aaaa");
  auto old = pool_.Acquire(kDecode);
  ASSERT_TRUE(old.ok());
  // Heartbeats of the same process change nothing.
  for (int i = 0; i < 3; ++i) pool_.Add(kDecode, "d0", "127.0.0.1:2", true, false, "aaaa");
  EXPECT_TRUE(gone_.empty());
  EXPECT_EQ(InFlight("d0"), 1);
  // `tandem up` restarts a worker on its old port: only the incarnation tells.
  pool_.Add(kDecode, "d0", "127.0.0.1:2", true, false, "dddd");
  EXPECT_EQ(gone_, (std::vector<Gone>{{kDecode, "d0", "127.0.0.1:2", "aaaa", old->generation}}));
  EXPECT_EQ(pool_.NumWorkers(kDecode), 1);
  EXPECT_EQ(InFlight("d0"), 0);
  auto now = pool_.Acquire(kDecode);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->incarnation, "dddd");
  pool_.Done(kDecode, *old);
  EXPECT_EQ(InFlight("d0"), 1);
  // A draining heartbeat of the new process is a heartbeat, not a restart.
  pool_.Add(kDecode, "d0", "127.0.0.1:2", true, /*draining=*/true, "dddd");
  EXPECT_EQ(gone_.size(), 1u);
  // After the listener is cleared nothing is told.
  pool_.SetGoneListener(nullptr);
  pool_.Add(kDecode, "d0", "127.0.0.1:2", true, false, "eeee");
  EXPECT_EQ(gone_.size(), 1u);
}

TEST_F(WorkerPoolIncarnationTest, StaticWorkersAndOtherIdsAtAnAddressAreNoRestartOfAnId) {
  // A static worker never takes over another's entry by id.
  pool_.Add(kPrefill, "s0", "127.0.0.1:4");
  pool_.Add(kPrefill, "s0", "127.0.0.1:5");
  EXPECT_EQ(pool_.NumWorkers(kPrefill), 2);
  // Another id registering at a static worker's address takes its entry; no
  // id lost an incarnation, so nobody is told.
  auto held = pool_.Acquire(kPrefill);
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(held->id, "s0");
  pool_.Add(kPrefill, "p9", held->address, true, false, "ffff");
  EXPECT_EQ(pool_.NumWorkers(kPrefill), 2);
  EXPECT_TRUE(gone_.empty());
  EXPECT_EQ(InFlight("p9"), 0);
  pool_.Done(kPrefill, *held);
  EXPECT_EQ(InFlight("p9"), 0);
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
  absl::StatusOr<WorkerHandle> d0 = pool_.Acquire(kDecode);
  ASSERT_TRUE(d0.ok());
  pool_.MarkFailed(kDecode, *d0);
  EXPECT_FALSE(pool_.AllHealth()[1].up);
  EXPECT_TRUE(pool_.Ready());
}

}  // namespace
}  // namespace tandem
