// AsyncEngine's disaggregation halves: Reserve / Activate on the decode side
// (exact blocks per prompt, refusals that change nothing, expiry, the release
// grace) and Prefill / ReleasePrefilled on the prefill side (the first token
// of the engine run directly, blocks held until released).
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/async_engine.h"
#include "gtest/gtest.h"
#include "tests/testing/engine_test_tools.h"
#include "tests/unit/engine/core/async_engine_test_util.h"

namespace tandem::async_engine_test {
namespace {

using testing::GreedyRequest;
using testing::LoopPause;
using testing::LoopStats;
using testing::StepGate;
using testing::TestPrompt;

TEST(AsyncEngineTest, ActivatedReservationDecodesToItsLengthThenFreesItsBlocks) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  Streams streams;
  Answer<std::vector<BlockId>> r1;
  e.async->Reserve(GreedyRequest("r1", TestPrompt(20), 6), std::chrono::seconds(60), r1.Callback());
  ASSERT_TRUE(r1.Wait());
  ASSERT_TRUE(r1.value().ok()) << r1.value().status();
  ASSERT_EQ(static_cast<int32_t>(r1.value()->size()), BlocksFor(20));
  EngineStats s = LoopStats(*e.async);
  EXPECT_EQ(s.num_awaiting_kv, 1);
  EXPECT_EQ(s.kv.num_used_blocks, BlocksFor(20));
  EXPECT_EQ(s.num_running, 0);

  // The prefill side sampled token 42: the stream carries the other five.
  e.async->Activate("r1", 42, streams.Sink("r1"));
  ASSERT_TRUE(streams.WaitEnded({"r1"}));
  EXPECT_EQ(streams.Get("r1").tokens.size(), 5u);
  EXPECT_EQ(streams.Get("r1").reason, FinishReason::kLength);
  EXPECT_TRUE(streams.Get("r1").errors.empty());
  ExpectIdle(*e.async, 64);

  // max_tokens 1: the first token alone finishes it.
  Answer<std::vector<BlockId>> r2;
  e.async->Reserve(GreedyRequest("r2", TestPrompt(20), 1), std::chrono::seconds(60), r2.Callback());
  ASSERT_TRUE(r2.Wait());
  ASSERT_TRUE(r2.value().ok());
  e.async->Activate("r2", 42, streams.Sink("r2"));
  ASSERT_TRUE(streams.WaitEnded({"r2"}));
  EXPECT_EQ(streams.Get("r2").events, 1);
  EXPECT_TRUE(streams.Get("r2").tokens.empty());
  EXPECT_EQ(streams.Get("r2").reason, FinishReason::kLength);
  ExpectIdle(*e.async, 64);

  // A first token outside the vocabulary: refused, the reservation stays.
  Answer<std::vector<BlockId>> r3;
  e.async->Reserve(GreedyRequest("r3", TestPrompt(20), 4), std::chrono::seconds(60), r3.Callback());
  ASSERT_TRUE(r3.Wait());
  ASSERT_TRUE(r3.value().ok());
  e.async->Activate("r3", 1 << 20, streams.Sink("r3"));
  ASSERT_TRUE(streams.WaitEnded({"r3"}));
  EXPECT_EQ(streams.Get("r3").errors.at(0).code(), absl::StatusCode::kInvalidArgument);
  s = LoopStats(*e.async);
  EXPECT_EQ(s.num_awaiting_kv, 1);
  EXPECT_EQ(s.kv.num_used_blocks, BlocksFor(20));
  e.async->Cancel("r3");
  ExpectIdle(*e.async, 64);

  // No reservation: NotFound through the sink.
  e.async->Activate("nobody", 42, streams.Sink("nobody"));
  ASSERT_TRUE(streams.WaitEnded({"nobody"}));
  EXPECT_EQ(streams.Get("nobody").errors.at(0).code(), absl::StatusCode::kNotFound);
}

TEST(AsyncEngineTest, ReserveRefusesWhatThePoolCannotHoldAndChangesNothing) {
  Engine e = MakeEngine(8);
  ASSERT_NE(e.async, nullptr);
  Answer<std::vector<BlockId>> big, more, dup, too_long;
  e.async->Reserve(GreedyRequest("big", TestPrompt(100), 4), std::chrono::seconds(60), big.Callback());
  ASSERT_TRUE(big.Wait());
  ASSERT_TRUE(big.value().ok()) << big.value().status();
  EXPECT_EQ(static_cast<int32_t>(big.value()->size()), 7);
  e.async->Reserve(GreedyRequest("more", TestPrompt(40), 4), std::chrono::seconds(60), more.Callback());
  e.async->Reserve(GreedyRequest("big", TestPrompt(10), 4), std::chrono::seconds(60), dup.Callback());
  e.async->Reserve(GreedyRequest("too-long", TestPrompt(130), 4), std::chrono::seconds(60), too_long.Callback());
  ASSERT_TRUE(more.Wait() && dup.Wait() && too_long.Wait());
  EXPECT_EQ(more.value().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(dup.value().status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(too_long.value().status().code(), absl::StatusCode::kInvalidArgument);
  const EngineStats s = LoopStats(*e.async);
  EXPECT_EQ(s.num_awaiting_kv, 1);
  EXPECT_EQ(s.kv.num_used_blocks, 7);
  EXPECT_EQ(s.kv.num_free_blocks, 1);
  e.async->Cancel("big");
  ExpectIdle(*e.async, 8);
}

TEST(AsyncEngineTest, ReservationNotActivatedInTimeIsFreedAndActivateIsNotFound) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  Answer<std::vector<BlockId>> r;
  e.async->Reserve(GreedyRequest("late", TestPrompt(40), 8), std::chrono::milliseconds(1), r.Callback());
  ASSERT_TRUE(r.Wait());
  ASSERT_TRUE(r.value().ok()) << r.value().status();
  EXPECT_EQ(static_cast<int32_t>(r.value()->size()), BlocksFor(40));
  ExpectIdle(*e.async, 64);  // expired: the loop freed it on its own
  Streams streams;
  e.async->Activate("late", 42, streams.Sink("late"));
  ASSERT_TRUE(streams.WaitEnded({"late"}));
  EXPECT_EQ(streams.Get("late").errors.at(0).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(streams.Get("late").events, 1);
  ExpectIdle(*e.async, 64);
}

TEST(AsyncEngineTest, ReleasedReservationKeepsItsBlocksForTheGraceThenFreesThem) {
  Streams streams;
  {
    // A grace far longer than the test: the blocks stay held, activation is refused.
    Engine e = MakeEngine(64, std::chrono::minutes(10));
    ASSERT_NE(e.async, nullptr);
    Answer<std::vector<BlockId>> r;
    e.async->Reserve(GreedyRequest("held", TestPrompt(40), 8), std::chrono::minutes(10), r.Callback());
    ASSERT_TRUE(r.Wait());
    ASSERT_TRUE(r.value().ok());
    e.async->Cancel("held");
    EngineStats s = LoopStats(*e.async);
    EXPECT_EQ(s.num_awaiting_kv, 1);
    EXPECT_EQ(s.kv.num_used_blocks, BlocksFor(40));
    e.async->Activate("held", 42, streams.Sink("held"));
    ASSERT_TRUE(streams.WaitEnded({"held"}));
    EXPECT_EQ(streams.Get("held").errors.at(0).code(), absl::StatusCode::kNotFound);
    e.async->Cancel("held");  // a second release changes nothing
    s = LoopStats(*e.async);
    EXPECT_EQ(s.num_awaiting_kv, 1);
    EXPECT_EQ(s.kv.num_used_blocks, BlocksFor(40));
  }
  {
    Engine e = MakeEngine(64, std::chrono::milliseconds(1));
    ASSERT_NE(e.async, nullptr);
    Answer<std::vector<BlockId>> r;
    e.async->Reserve(GreedyRequest("graced", TestPrompt(40), 8), std::chrono::minutes(10), r.Callback());
    ASSERT_TRUE(r.Wait());
    ASSERT_TRUE(r.value().ok());
    e.async->Cancel("graced");
    ExpectIdle(*e.async, 64);  // the grace ran out
  }
}

TEST(AsyncEngineTest, PrefillHandsOverTheFirstTokenAndBlocksUntilReleased) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  const EngineRequest request = GreedyRequest("p", TestPrompt(40, 3), 8);
  absl::StatusOr<std::map<std::string, std::vector<int32_t>>> want = testing::DirectTokens({request});
  ASSERT_TRUE(want.ok()) << want.status();

  Answer<AsyncEngine::Prefilled> p;
  e.async->Prefill(request, p.Callback());
  ASSERT_TRUE(p.Wait());
  ASSERT_TRUE(p.value().ok()) << p.value().status();
  EXPECT_EQ(p.value()->first_token.token_id, want->at("p").front());
  EXPECT_EQ(static_cast<int32_t>(p.value()->blocks.size()), BlocksFor(40));
  EngineStats s = LoopStats(*e.async);
  EXPECT_EQ(s.num_prefilled, 1);
  EXPECT_EQ(s.num_running, 0);
  EXPECT_EQ(s.kv.num_used_blocks, BlocksFor(40));
  e.async->ReleasePrefilled("p");
  ExpectIdle(*e.async, 64);
  e.async->ReleasePrefilled("p");  // already released: ignored
  ExpectIdle(*e.async, 64);
  EXPECT_EQ(p.calls(), 1);

  Answer<AsyncEngine::Prefilled> bad;
  e.async->Prefill(GreedyRequest("bad", {}, 8), bad.Callback());
  ASSERT_TRUE(bad.Wait());
  EXPECT_EQ(bad.value().status().code(), absl::StatusCode::kInvalidArgument);
  ExpectIdle(*e.async, 64);
}

}  // namespace
}  // namespace tandem::async_engine_test
