// PrefillWindow's rules, exactly: the window's budget (tokens per live
// prefill worker), an oversized request alone in an empty window, FIFO order
// (newcomers wait behind the queue; a request put back returns to its
// arrival place), the queue's count and token bounds, the hold while the
// decode side is full (one probe per DecodeRoom, one at a time), and the token sums back to
// 0 once everything left.
#include "router/prefill_window.h"

#include <gtest/gtest.h>

#include <vector>

namespace tandem {
namespace {

using Seqs = std::vector<uint64_t>;

PrefillWindow::Limits SmallLimits() {
  PrefillWindow::Limits l;
  l.tokens_per_prefill_worker = 100;
  l.max_queued = 3;
  l.max_queued_tokens = 250;
  return l;
}

TEST(PrefillWindowTest, RequestsEnterWhileTheyFitTheBudgetOfTheLivePrefillWorkers) {
  PrefillWindow w(SmallLimits());
  EXPECT_EQ(w.Budget(0), 0);
  EXPECT_EQ(w.Budget(2), 200);
  bool started = false;
  ASSERT_TRUE(w.Arrive(1, 60, 1, &started));
  EXPECT_TRUE(started);
  ASSERT_TRUE(w.Arrive(2, 40, 1, &started));  // 100: exactly the budget
  EXPECT_TRUE(started);
  ASSERT_TRUE(w.Arrive(3, 1, 1, &started));
  EXPECT_FALSE(started);
  EXPECT_EQ(w.window_tokens(), 100);
  EXPECT_EQ(w.num_in_window(), 2);
  EXPECT_EQ(w.num_queued(), 1);
  EXPECT_EQ(w.queued_tokens(), 1);
  // A second prefill worker doubles the budget: the queued one fits now.
  EXPECT_EQ(w.Drain(2), Seqs{3});
  EXPECT_EQ(w.window_tokens(), 101);
  EXPECT_EQ(w.high_water_tokens(), 101);
  w.Leave(1);
  w.Leave(1);  // twice: nothing more
  w.Leave(2);
  w.Forget(3);
  EXPECT_EQ(w.window_tokens(), 0);
  EXPECT_EQ(w.num_in_window(), 0);
  EXPECT_EQ(w.queued_tokens(), 0);
}

TEST(PrefillWindowTest, ARequestBiggerThanTheBudgetGoesAloneWhenTheWindowIsEmpty) {
  PrefillWindow w(SmallLimits());
  bool started = false;
  ASSERT_TRUE(w.Arrive(1, 10, 1, &started));
  ASSERT_TRUE(w.Arrive(2, 150, 1, &started));  // 1.5 budgets: waits for an empty window
  EXPECT_FALSE(started);
  ASSERT_TRUE(w.Arrive(3, 10, 1, &started));   // fits, but waits behind 2 (FIFO)
  EXPECT_FALSE(started);
  EXPECT_EQ(w.Drain(1), Seqs{});
  w.Leave(1);
  EXPECT_EQ(w.Drain(1), Seqs{2});
  EXPECT_EQ(w.window_tokens(), 150);
  EXPECT_EQ(w.Drain(1), Seqs{});  // 160 > 100
  w.Leave(2);
  EXPECT_EQ(w.Drain(1), Seqs{3});
  // With no live prefill worker the budget is 0: one request at a time.
  ASSERT_TRUE(w.Arrive(4, 5, 0, &started));
  EXPECT_FALSE(started);
  w.Leave(3);
  EXPECT_EQ(w.Drain(0), Seqs{4});
  w.Leave(4);
  EXPECT_EQ(w.window_tokens(), 0);
}

TEST(PrefillWindowTest, TheQueueIsBoundedByCountAndByTokens) {
  PrefillWindow w(SmallLimits());
  bool started = false;
  ASSERT_TRUE(w.Arrive(1, 100, 1, &started));
  ASSERT_TRUE(started);
  ASSERT_TRUE(w.Arrive(2, 100, 1, &started));
  ASSERT_TRUE(w.Arrive(3, 100, 1, &started));
  EXPECT_FALSE(w.Arrive(4, 51, 1, &started));  // 251 tokens > 250
  EXPECT_FALSE(started);
  ASSERT_TRUE(w.Arrive(5, 50, 1, &started));   // 250: exactly the bound
  EXPECT_FALSE(w.Arrive(6, 0, 1, &started));   // 4 > 3 requests
  EXPECT_EQ(w.num_queued(), 3);
  EXPECT_EQ(w.queued_tokens(), 250);
  EXPECT_FALSE(w.Queued(4));
  EXPECT_FALSE(w.Queued(6));
  // A request already streaming (a migration) is put back whatever the bounds.
  ASSERT_TRUE(w.Requeue(7, 30, /*bounded=*/false));
  EXPECT_EQ(w.num_queued(), 4);
  EXPECT_EQ(w.queued_tokens(), 280);
  EXPECT_FALSE(w.Requeue(1, 100, /*bounded=*/true));  // out of the window, refused by the full queue
  EXPECT_FALSE(w.InWindow(1));
  EXPECT_FALSE(w.Queued(1));
  EXPECT_EQ(w.window_tokens(), 0);
  for (uint64_t s : {2, 3, 5, 7}) w.Forget(s);
  EXPECT_EQ(w.num_queued(), 0);
  EXPECT_EQ(w.queued_tokens(), 0);
}

TEST(PrefillWindowTest, ARequestPutBackReturnsToItsArrivalPlace) {
  PrefillWindow::Limits l = SmallLimits();
  l.max_queued = 10;
  l.max_queued_tokens = 1000;
  PrefillWindow w(l);
  bool started = false;
  for (uint64_t s = 1; s <= 2; ++s) {
    ASSERT_TRUE(w.Arrive(s, 50, 1, &started));
    ASSERT_TRUE(started);
  }
  for (uint64_t s = 3; s <= 4; ++s) ASSERT_TRUE(w.Arrive(s, 50, 1, &started));
  // 2 then 1 come back (a decode worker refused both): ahead of 3 and 4, in arrival order.
  ASSERT_TRUE(w.Requeue(2, 50, true));
  ASSERT_TRUE(w.Requeue(1, 50, true));
  EXPECT_EQ(w.window_tokens(), 0);
  EXPECT_EQ(w.Drain(1), (Seqs{1, 2}));
  w.Leave(1);
  w.Leave(2);
  EXPECT_EQ(w.Drain(1), (Seqs{3, 4}));
}

TEST(PrefillWindowTest, AFullDecodeSideHoldsTheQueueUntilDecodeRoomThenOneProbeGoes) {
  PrefillWindow::Limits l = SmallLimits();
  l.max_queued = 10;
  l.max_queued_tokens = 1000;
  PrefillWindow w(l);
  bool started = false;
  ASSERT_TRUE(w.Arrive(1, 10, 1, &started));
  ASSERT_TRUE(w.Arrive(2, 10, 1, &started));
  ASSERT_TRUE(w.Arrive(3, 10, 1, &started));
  ASSERT_TRUE(started);
  // 2's Admit is refused: back in the queue, and the queue holds.
  w.DecodeFull();
  ASSERT_TRUE(w.Requeue(2, 10, true));
  EXPECT_EQ(w.Drain(1), Seqs{});  // room in the window is not room on the decode side
  ASSERT_TRUE(w.Arrive(4, 10, 1, &started));
  EXPECT_FALSE(started);  // a newcomer waits too
  // A request ended: one probe, the queue's head.
  w.DecodeRoom();
  EXPECT_EQ(w.Drain(1), Seqs{2});
  EXPECT_EQ(w.Drain(1), Seqs{});
  // Room again while the probe is in flight: no second probe (4 must not
  // overtake 2); it waits for the probe's answer.
  w.DecodeRoom();
  EXPECT_EQ(w.Drain(1), Seqs{});
  // The probe is refused: back at the head, and tried again at once (the
  // room came after it was sent).
  ASSERT_TRUE(w.Requeue(2, 10, true));
  EXPECT_EQ(w.Drain(1), Seqs{2});
  ASSERT_TRUE(w.Requeue(2, 10, true));
  EXPECT_EQ(w.Drain(1), Seqs{});  // no room since
  w.DecodeRoom();
  w.DecodeRoom();  // one probe, however many rooms
  EXPECT_EQ(w.Drain(1), Seqs{2});
  EXPECT_EQ(w.Drain(1), Seqs{});
  // The probe is admitted: the queue opens.
  w.DecodeAdmitted();
  EXPECT_FALSE(w.decode_full());
  EXPECT_EQ(w.Drain(1), Seqs{4});
  for (uint64_t s : {1, 2, 3, 4}) w.Forget(s);
  EXPECT_EQ(w.window_tokens(), 0);
  EXPECT_EQ(w.queued_tokens(), 0);
  // DecodeRoom without a full decode side leaves no probe behind.
  w.DecodeRoom();
  w.DecodeFull();
  ASSERT_TRUE(w.Arrive(5, 10, 1, &started));
  EXPECT_FALSE(started);
}

TEST(PrefillWindowTest, AProbeThatDoesNotFitTheWindowWaitsForIt) {
  PrefillWindow w(SmallLimits());
  bool started = false;
  ASSERT_TRUE(w.Arrive(1, 90, 1, &started));
  ASSERT_TRUE(w.Arrive(2, 20, 1, &started));
  EXPECT_FALSE(started);
  w.DecodeFull();
  w.DecodeRoom();
  EXPECT_EQ(w.Drain(1), Seqs{});  // 110 > 100: the probe is kept for later
  w.Leave(1);
  EXPECT_EQ(w.Drain(1), Seqs{2});
  EXPECT_EQ(w.Drain(1), Seqs{});
}

}  // namespace
}  // namespace tandem
