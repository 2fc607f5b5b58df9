// DrainGate: tickets counted until released, refused once draining (Hold()
// still counted), WaitIdle bounded and woken by the last release.
#include "common/drain_gate.h"

#include <gtest/gtest.h>

#include <thread>

namespace tandem {
namespace {

TEST(DrainGateTest, CountsTicketsUntilReleased) {
  DrainGate gate;
  std::shared_ptr<DrainGate::Ticket> a = gate.Enter();
  std::shared_ptr<DrainGate::Ticket> b = gate.Enter();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(gate.num_in_flight(), 2);
  std::shared_ptr<DrainGate::Ticket> copy = a;  // a closure's copy: still one call
  a.reset();
  EXPECT_EQ(gate.num_in_flight(), 2);
  copy.reset();
  EXPECT_EQ(gate.num_in_flight(), 1);
  b.reset();
  EXPECT_EQ(gate.num_in_flight(), 0);
}

TEST(DrainGateTest, DrainingRefusesEnterButNotHold) {
  DrainGate gate;
  std::shared_ptr<DrainGate::Ticket> before = gate.Enter();
  EXPECT_FALSE(gate.draining());
  gate.StartDraining();
  gate.StartDraining();  // idempotent
  EXPECT_TRUE(gate.draining());
  EXPECT_EQ(gate.Enter(), nullptr);
  EXPECT_EQ(gate.num_in_flight(), 1);
  std::shared_ptr<DrainGate::Ticket> held = gate.Hold();
  ASSERT_NE(held, nullptr);
  EXPECT_EQ(gate.num_in_flight(), 2);
  before.reset();
  held.reset();
  EXPECT_EQ(gate.num_in_flight(), 0);
}

TEST(DrainGateTest, WaitIdleTimesOutThenWakesOnLastRelease) {
  DrainGate gate;
  EXPECT_TRUE(gate.WaitIdle(std::chrono::milliseconds(0)));
  std::shared_ptr<DrainGate::Ticket> t = gate.Enter();
  gate.StartDraining();
  EXPECT_FALSE(gate.WaitIdle(std::chrono::milliseconds(20)));
  std::thread releaser([&t] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    t.reset();
  });
  EXPECT_TRUE(gate.WaitIdle(std::chrono::seconds(10)));
  releaser.join();
}

}  // namespace
}  // namespace tandem
