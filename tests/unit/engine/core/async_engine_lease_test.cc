// AsyncEngine's reservation leases on a fake clock: Renew extends a lease
// from now, an unrenewed lease expires into the release grace (blocks held,
// activation refused) and then frees its blocks, and Renew names exactly the
// ids that hold no live reservation. Exact block counts at every step.
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "engine/core/async_engine.h"
#include "gtest/gtest.h"
#include "tests/testing/engine_test_tools.h"
#include "tests/unit/engine/core/async_engine_test_util.h"

namespace tandem::async_engine_test {
namespace {

using std::chrono::milliseconds;
using testing::GreedyRequest;
using testing::LoopStats;
using testing::TestPrompt;

class FakeClock {
 public:
  AsyncEngine::LeaseClock Fn() {
    return [this] { return std::chrono::steady_clock::time_point(milliseconds(ms_.load())); };
  }
  void Set(int64_t ms) { ms_.store(ms); }

 private:
  std::atomic<int64_t> ms_{1000000};
};

// The engine after a clock change: the first LoopStats' command runs before
// that iteration's expiry pass, the second after it.
EngineStats Settled(AsyncEngine& engine) {
  LoopStats(engine);
  return LoopStats(engine);
}

std::vector<std::string> Renew(AsyncEngine& engine, std::vector<std::string> ids) {
  Answer<std::vector<std::string>> unknown;
  engine.Renew(std::move(ids), [&unknown](std::vector<std::string> u) { unknown.Callback()(std::move(u)); });
  EXPECT_TRUE(unknown.Wait());
  return unknown.value().ok() ? *unknown.value() : std::vector<std::string>{"<no answer>"};
}

TEST(AsyncEngineLeaseTest, RenewedLeasesLiveOnUnrenewedOnesExpireIntoTheGraceThenFree) {
  FakeClock clock;
  const int64_t t0 = 1000000;
  clock.Set(t0);
  Engine e = MakeEngine(64, milliseconds(500), clock.Fn());
  ASSERT_NE(e.async, nullptr);
  Answer<std::vector<BlockId>> a, b;
  e.async->Reserve(GreedyRequest("a", TestPrompt(40), 4), milliseconds(1000), a.Callback());
  e.async->Reserve(GreedyRequest("b", TestPrompt(20), 4), milliseconds(1000), b.Callback());
  ASSERT_TRUE(a.Wait() && b.Wait());
  ASSERT_TRUE(a.value().ok() && b.value().ok());
  const int32_t blocks_a = BlocksFor(40), blocks_b = BlocksFor(20);

  clock.Set(t0 + 800);
  EXPECT_EQ(Renew(*e.async, {"a", "nobody"}), std::vector<std::string>{"nobody"});  // a: until t0 + 1800

  clock.Set(t0 + 1000);  // b's lease is over: quarantined, its blocks still held
  EngineStats s = Settled(*e.async);
  EXPECT_EQ(s.num_awaiting_kv, 2);
  EXPECT_EQ(s.kv.num_used_blocks, blocks_a + blocks_b);
  EXPECT_EQ(Renew(*e.async, {"b", "a"}), std::vector<std::string>{"b"});  // a: until t0 + 2000
  Streams streams;
  e.async->Activate("b", 42, streams.Sink("b"));
  ASSERT_TRUE(streams.WaitEnded({"b"}));
  EXPECT_EQ(streams.Get("b").errors.at(0).code(), absl::StatusCode::kNotFound);

  clock.Set(t0 + 1499);  // still within b's grace
  s = Settled(*e.async);
  EXPECT_EQ(s.kv.num_used_blocks, blocks_a + blocks_b);
  clock.Set(t0 + 1500);  // the grace is over: b's blocks are free; a lives on
  s = Settled(*e.async);
  EXPECT_EQ(s.num_awaiting_kv, 1);
  EXPECT_EQ(s.kv.num_used_blocks, blocks_a);

  // a, activated, is no longer a reservation to renew; it decodes to its end.
  e.async->Activate("a", 42, streams.Sink("a"));
  ASSERT_TRUE(streams.WaitEnded({"a"}));
  EXPECT_TRUE(streams.Get("a").errors.empty());
  EXPECT_EQ(Renew(*e.async, {"a"}), std::vector<std::string>{"a"});
  ExpectIdle(*e.async, 64);
}

TEST(AsyncEngineLeaseTest, WithoutAGraceAnExpiredLeaseFreesAtOnce) {
  FakeClock clock;
  const int64_t t0 = 1000000;
  clock.Set(t0);
  Engine e = MakeEngine(64, milliseconds(0), clock.Fn());
  ASSERT_NE(e.async, nullptr);
  Answer<std::vector<BlockId>> r;
  e.async->Reserve(GreedyRequest("r", TestPrompt(40), 4), milliseconds(300), r.Callback());
  ASSERT_TRUE(r.Wait());
  ASSERT_TRUE(r.value().ok());
  clock.Set(t0 + 299);
  EXPECT_EQ(Settled(*e.async).kv.num_used_blocks, BlocksFor(40));
  clock.Set(t0 + 300);
  ExpectIdle(*e.async, 64);
  EXPECT_EQ(Renew(*e.async, {"r"}), std::vector<std::string>{"r"});
}

TEST(AsyncEngineLeaseTest, RenewAfterStopAnswersEveryIdUnknown) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  e.async->Stop();
  EXPECT_EQ(Renew(*e.async, {"x", "y"}), (std::vector<std::string>{"x", "y"}));
}

}  // namespace
}  // namespace tandem::async_engine_test
