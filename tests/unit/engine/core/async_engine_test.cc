// AsyncEngine driven from other threads: streams carry exactly the tokens
// the engine gives when run directly; concurrent submits and cancels, request
// errors, a cancel in every request state, and Stop() with work in flight or
// queued all end with exact block counts, read on the loop thread or, after
// Stop(), on the engine itself. The bundled model runs greedy.
#include <omp.h>

#include <algorithm>
#include <filesystem>
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

TEST(AsyncEngineTest, StreamsTheTokensOfTheEngineRunDirectlyAndFreesEveryBlock) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  const std::vector<EngineRequest> requests = {GreedyRequest("a", TestPrompt(20, 0), 12),
                                               GreedyRequest("b", TestPrompt(33, 1), 20),
                                               GreedyRequest("c", TestPrompt(5, 2), 7)};
  absl::StatusOr<std::map<std::string, std::vector<int32_t>>> want = testing::DirectTokens(requests);
  ASSERT_TRUE(want.ok()) << want.status();
  const EngineStats start = LoopStats(*e.async);
  ASSERT_EQ(start.kv.num_free_blocks, 64);

  Streams streams;
  for (const EngineRequest& r : requests) e.async->Submit(r, {}, streams.Sink(r.request_id));
  ASSERT_TRUE(streams.WaitEnded({"a", "b", "c"}));
  for (const EngineRequest& r : requests) {
    const Streams::Stream s = streams.Get(r.request_id);
    EXPECT_EQ(s.tokens, want->at(r.request_id)) << r.request_id;
    EXPECT_EQ(s.tokens.size(), r.sampling.max_tokens) << r.request_id;
    EXPECT_EQ(s.finished, 1) << r.request_id;
    EXPECT_EQ(s.reason, FinishReason::kLength) << r.request_id;
    EXPECT_TRUE(s.errors.empty()) << r.request_id;
    EXPECT_EQ(s.events_after_end, 0) << r.request_id;
  }
  ExpectIdle(*e.async, 64);
  // The per-step snapshot catches up with the loop's state too.
  EXPECT_TRUE(WaitUntil([&] { return testing::Idle(e.async->Stats()); })) << testing::Describe(e.async->Stats());
}

// Threads of this process, from /proc (the OpenMP pools show up there).
int NumThreads() {
  int n = 0;
  for ([[maybe_unused]] const auto& t : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

TEST(AsyncEngineTest, WarmUpRunsOnTheLoopThreadSoOneOpenMpTeamServesEveryStep) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  // Teams of two on both threads (tests run with OMP_NUM_THREADS=1), so a
  // team started on either shows as one more thread.
  omp_set_num_threads(2);
  int team = 0;
  e.async->RunOnLoop([&team](LlmEngine&) {
    omp_set_num_threads(2);
    team = omp_get_max_threads();
  });
  ASSERT_EQ(team, 2);
  const int before = NumThreads();  // this thread (and whatever loading left), the loop thread
  ASSERT_TRUE(e.async->WarmUp().ok());
  // A warm-up on this thread would have started a second team here.
  EXPECT_EQ(NumThreads(), before + team - 1);
  Streams streams;
  const EngineRequest r = GreedyRequest("a", TestPrompt(20, 0), 4);
  e.async->Submit(r, {}, streams.Sink("a"));
  ASSERT_TRUE(streams.WaitEnded({"a"}));
  EXPECT_EQ(NumThreads(), before + team - 1);  // the steps used the same team
}

TEST(AsyncEngineTest, ConcurrentSubmitsAndCancelsFromFourThreadsEndExactly) {
  Engine e = MakeEngine(128);
  ASSERT_NE(e.async, nullptr);
  constexpr int kThreads = 4, kPerThread = 6;
  std::vector<EngineRequest> requests;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      // Odd ones are cancelled right after submission: long, so most are mid-stream then.
      const uint32_t max_tokens = i % 2 == 1 ? 40u : static_cast<uint32_t>(5 + i + t);
      requests.push_back(GreedyRequest(absl::StrCat("t", t, "-", i),
                                       TestPrompt(6 + 5 * i + t, 10 * t + i), max_tokens));
    }
  }
  absl::StatusOr<std::map<std::string, std::vector<int32_t>>> want = testing::DirectTokens(requests);
  ASSERT_TRUE(want.ok()) << want.status();

  Streams streams;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const EngineRequest& r = requests[static_cast<size_t>(t * kPerThread + i)];
        e.async->Submit(r, {}, streams.Sink(r.request_id));
        if (i % 2 == 1) e.async->Cancel(r.request_id);
        (void)e.async->Stats();  // a reader racing the loop
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::string> kept;
  for (int k = 0; k < kThreads * kPerThread; ++k) {
    if (k % kPerThread % 2 == 0) kept.push_back(requests[static_cast<size_t>(k)].request_id);
  }
  ASSERT_TRUE(streams.WaitEnded(kept));
  // Every cancel is applied before this read: nothing is left anywhere.
  ExpectIdle(*e.async, 128);
  for (const EngineRequest& r : requests) {
    const Streams::Stream s = streams.Get(r.request_id);
    const std::vector<int32_t>& full = want->at(r.request_id);
    EXPECT_TRUE(s.errors.empty()) << r.request_id << ": " << s.errors.front();
    EXPECT_EQ(s.events_after_end, 0) << r.request_id;
    if (std::find(kept.begin(), kept.end(), r.request_id) != kept.end()) {
      EXPECT_EQ(s.tokens, full) << r.request_id;
      EXPECT_EQ(s.finished, 1) << r.request_id;
    } else {
      // Cancelled: what arrived before the cancel is the start of the same stream.
      ASSERT_LE(s.tokens.size(), full.size()) << r.request_id;
      EXPECT_EQ(s.tokens, std::vector<int32_t>(full.begin(), full.begin() + static_cast<long>(s.tokens.size())))
          << r.request_id;
      EXPECT_EQ(s.finished, s.tokens.size() == full.size() ? 1 : 0) << r.request_id;
    }
  }
}

TEST(AsyncEngineTest, RequestErrorsAreTheStreamsOnlyEventAndHoldNothing) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  Streams streams;
  {
    LoopPause pause(e.async.get());  // both "dup"s reach the engine in one batch
    ASSERT_TRUE(pause.paused());
    e.async->Submit(GreedyRequest("dup", TestPrompt(10), 30), {}, streams.Sink("dup-first"));
    e.async->Submit(GreedyRequest("dup", TestPrompt(12), 30), {}, streams.Sink("dup-second"));
    e.async->Submit(GreedyRequest("oov", {5, 1 << 20}, 4), {}, streams.Sink("oov"));
    e.async->Submit(GreedyRequest("empty", {}, 4), {}, streams.Sink("empty"));
    e.async->Submit(GreedyRequest("too-long", TestPrompt(250), 16), {}, streams.Sink("too-long"));
  }
  ASSERT_TRUE(streams.WaitEnded({"dup-second", "oov", "empty", "too-long"}));
  EXPECT_EQ(streams.Get("dup-second").errors.at(0).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(streams.Get("oov").errors.at(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(streams.Get("empty").errors.at(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(streams.Get("too-long").errors.at(0).code(), absl::StatusCode::kInvalidArgument);
  for (const char* k : {"dup-second", "oov", "empty", "too-long"}) {
    EXPECT_EQ(streams.Get(k).events, 1) << k;
    EXPECT_TRUE(streams.Get(k).tokens.empty()) << k;
  }
  // The first "dup" is unaffected by its twin.
  ASSERT_TRUE(streams.WaitEnded({"dup-first"}));
  EXPECT_EQ(streams.Get("dup-first").tokens.size(), 30u);
  EXPECT_TRUE(streams.Get("dup-first").errors.empty());
  ExpectIdle(*e.async, 64);
}

TEST(AsyncEngineTest, CancelFreesARequestInEveryState) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  StepGate gate(e.async.get());
  Streams streams;

  // Running: held after its first step (its first token not yet delivered).
  gate.Arm(1);
  e.async->Submit(GreedyRequest("running", TestPrompt(20), 200), {}, streams.Sink("running"));
  ASSERT_TRUE(gate.WaitHeld());
  e.async->Cancel("running");
  gate.Release();
  ExpectIdle(*e.async, 64);
  EXPECT_EQ(streams.Get("running").events, 1);  // the held step's token, then nothing
  EXPECT_EQ(streams.Get("running").tokens.size(), 1u);
  EXPECT_FALSE(streams.Get("running").ended());

  // Waiting: added and cancelled before any step.
  {
    LoopPause pause(e.async.get());
    e.async->Submit(GreedyRequest("waiting", TestPrompt(20), 200), {}, streams.Sink("waiting"));
    e.async->Cancel("waiting");
  }
  ExpectIdle(*e.async, 64);
  EXPECT_EQ(streams.Get("waiting").events, 0);

  // Reserved (awaiting KV): its blocks go at once (no grace here).
  Answer<std::vector<BlockId>> reserved;
  e.async->Reserve(GreedyRequest("reserved", TestPrompt(40), 8), std::chrono::seconds(60), reserved.Callback());
  ASSERT_TRUE(reserved.Wait());
  ASSERT_TRUE(reserved.value().ok()) << reserved.value().status();
  EXPECT_EQ(static_cast<int32_t>(reserved.value()->size()), BlocksFor(40));
  EngineStats s = LoopStats(*e.async);
  EXPECT_EQ(s.num_awaiting_kv, 1);
  EXPECT_EQ(s.kv.num_used_blocks, BlocksFor(40));
  e.async->Cancel("reserved");
  ExpectIdle(*e.async, 64);

  // Prefill in flight: its waiter hears Cancelled, exactly once.
  Answer<AsyncEngine::Prefilled> prefilling;
  {
    LoopPause pause(e.async.get());
    e.async->Prefill(GreedyRequest("prefilling", TestPrompt(40), 8), prefilling.Callback());
    e.async->Cancel("prefilling");
  }
  ASSERT_TRUE(prefilling.Wait());
  EXPECT_EQ(prefilling.value().status().code(), absl::StatusCode::kCancelled);
  ExpectIdle(*e.async, 64);
  EXPECT_EQ(prefilling.calls(), 1);

  // Prefilled (handed over, not yet released).
  Answer<AsyncEngine::Prefilled> prefilled;
  e.async->Prefill(GreedyRequest("prefilled", TestPrompt(40), 8), prefilled.Callback());
  ASSERT_TRUE(prefilled.Wait());
  ASSERT_TRUE(prefilled.value().ok()) << prefilled.value().status();
  s = LoopStats(*e.async);
  EXPECT_EQ(s.num_prefilled, 1);
  EXPECT_EQ(s.kv.num_used_blocks, BlocksFor(40));
  e.async->Cancel("prefilled");
  ExpectIdle(*e.async, 64);

  e.async->Cancel("never-submitted");  // a no-op
  ExpectIdle(*e.async, 64);
}

// Stop() with streams running, a reservation and a prefilled prompt held:
// every stream ends with exactly one terminal event (Cancelled), running
// requests are aborted; the reservation and the prefilled prompt keep their
// blocks (nobody can release them any more: the engine is going away).
TEST(AsyncEngineTest, StopEndsEveryStreamAndLeavesOnlyHandedOverBlocks) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  Streams streams;
  Answer<std::vector<BlockId>> reserved;
  Answer<AsyncEngine::Prefilled> prefilled;
  e.async->Submit(GreedyRequest("a", TestPrompt(10, 1), 240), {}, streams.Sink("a"));
  e.async->Submit(GreedyRequest("b", TestPrompt(30, 2), 220), {}, streams.Sink("b"));
  e.async->Reserve(GreedyRequest("r", TestPrompt(40, 3), 8), std::chrono::minutes(10), reserved.Callback());
  e.async->Prefill(GreedyRequest("p", TestPrompt(20, 4), 8), prefilled.Callback());
  ASSERT_TRUE(reserved.Wait() && prefilled.Wait());
  ASSERT_TRUE(reserved.value().ok() && prefilled.value().ok());
  ASSERT_TRUE(streams.WaitEvents("a", 1) && streams.WaitEvents("b", 1));
  e.async->Stop();

  for (const char* k : {"a", "b"}) {
    const Streams::Stream s = streams.Get(k);
    EXPECT_TRUE(s.ended()) << k;
    EXPECT_EQ(s.events_after_end, 0) << k;
    // Cancelled, unless the machine stalled long enough for it to finish first.
    if (s.finished == 0) {
      ASSERT_EQ(s.errors.size(), 1u) << k;
      EXPECT_EQ(s.errors[0].code(), absl::StatusCode::kCancelled) << k;
    }
  }
  // The loop thread is gone: the engine itself is safe to read.
  const EngineStats s = e.raw->Stats();
  EXPECT_EQ(s.num_running, 0);
  EXPECT_EQ(s.num_waiting, 0);
  EXPECT_EQ(s.num_awaiting_kv, 1);
  EXPECT_EQ(s.num_prefilled, 1);
  EXPECT_EQ(s.kv.num_used_blocks, BlocksFor(40) + BlocksFor(20));
  EXPECT_EQ(s.kv.num_free_blocks, 64 - BlocksFor(40) - BlocksFor(20));

  // After Stop() commands are dropped: RunOnLoop returns without running.
  bool ran = false;
  e.async->RunOnLoop([&](LlmEngine&) { ran = true; });
  EXPECT_FALSE(ran);
  e.async->Stop();  // idempotent
}

// Commands queued behind a held loop when Stop() comes each get exactly one
// answer, whether the loop applied them before it saw the stop or not.
TEST(AsyncEngineTest, StopAnswersEveryQueuedCommandOnce) {
  Engine e = MakeEngine();
  ASSERT_NE(e.async, nullptr);
  Streams streams;
  Answer<std::vector<BlockId>> reserved;
  Answer<AsyncEngine::Prefilled> prefilled;
  std::jthread stopper;
  {
    LoopPause pause(e.async.get());
    ASSERT_TRUE(pause.paused());
    e.async->Submit(GreedyRequest("queued", TestPrompt(10), 240), {}, streams.Sink("queued"));
    e.async->Reserve(GreedyRequest("r", TestPrompt(40), 8), std::chrono::minutes(10), reserved.Callback());
    e.async->Prefill(GreedyRequest("p", TestPrompt(20), 8), prefilled.Callback());
    stopper = std::jthread([&] { e.async->Stop(); });
  }
  stopper.join();
  EXPECT_EQ(reserved.calls(), 1);
  EXPECT_EQ(prefilled.calls(), 1);
  const Streams::Stream s = streams.Get("queued");
  EXPECT_TRUE(s.ended());
  EXPECT_EQ(s.events_after_end, 0);
  EXPECT_EQ(s.errors.size(), 1u);
  EXPECT_EQ(e.raw->Stats().num_running + e.raw->Stats().num_waiting, 0);
}

}  // namespace
}  // namespace tandem::async_engine_test
