// Router-side admission through a cluster in one process (router, prefill
// and decode workers, real gRPC, loopback KV): requests hold a decode
// reservation while they wait for or run their prefill only inside the
// prefill window (max_prefill_tokens_per_worker x live prefill workers);
// the rest wait in the router's FIFO queue, bounded by count and tokens
// (beyond: RESOURCE_EXHAUSTED with the retry hint). The prefill worker's
// loop is held so requests stay where they are while the test counts them;
// afterwards every stream equals the engine run directly, and the window's
// and the queue's token counts are back to 0 (ExpectAllReleased).
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "router/client_status.h"
#include "router/cluster_backend.h"
#include "tests/testing/inproc_cluster.h"
#include "tests/unit/router/cluster_backend_test_util.h"

namespace tandem::cluster_backend_test {
namespace {

using testing::LoopStats;
using testing::TestPrompt;

constexpr int kPrompt = 40;  // tokens of every prompt here: 3 blocks of 16

std::vector<v1::GenerateRequest> Requests(int n, int salt, uint32_t max_tokens = 8) {
  std::vector<v1::GenerateRequest> out;
  for (int i = 0; i < n; ++i) out.push_back(testing::GreedyGenerateRequest(TestPrompt(kPrompt, salt + i), max_tokens));
  return out;
}

// A window of two 40-token prompts: six requests, two reserve and wait for
// the held prefill worker, four wait at the router without a reservation.
TEST(AdmissionTest, OnlyTheWindowsWorthOfRequestsHoldsDecodeReservations) {
  ClusterSpec spec;
  spec.router.max_prefill_tokens_per_worker = 2 * kPrompt + 20;
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const std::vector<v1::GenerateRequest> reqs = Requests(6, 30);
  std::vector<Expected> want;
  for (const auto& r : reqs) want.push_back(Reference(*c->router, r));
  std::vector<StreamResult> got(reqs.size());
  std::vector<std::jthread> clients;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    for (size_t i = 0; i < reqs.size(); ++i) {
      clients.emplace_back([&, i] { got[i] = testing::Generate(c->router->stub(), reqs[i]); });
    }
    ASSERT_TRUE(WaitUntil([&] {
      return c->prefill[0]->drain().num_in_flight() == 2 && c->router->backend().num_queued() == 4;
    }));
    ClusterBackend& b = c->router->backend();
    EXPECT_EQ(b.num_in_window(), 2);
    EXPECT_EQ(b.window_tokens(), 2 * kPrompt);
    EXPECT_EQ(b.queued_tokens(), 4 * kPrompt);
    const EngineStats d = LoopStats(c->decode[0]->engine());
    EXPECT_EQ(d.num_awaiting_kv, 2);  // two reservations, not six
    EXPECT_EQ(d.kv.num_used_blocks, 2 * 3);
  }
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    ExpectExact(got[i], want[i], kPrompt);
  }
  // Never more than two prompts in the window, at any moment of the run.
  EXPECT_EQ(c->router->backend().window_high_water_tokens(), 2 * kPrompt);
  c->ExpectAllReleased();
}

// A prompt bigger than the whole window still goes, alone, once the window
// is empty: nothing starves.
TEST(AdmissionTest, APromptBiggerThanTheWindowGoesAloneWhenTheWindowIsEmpty) {
  ClusterSpec spec;
  spec.router.max_prefill_tokens_per_worker = kPrompt / 2;
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const std::vector<v1::GenerateRequest> reqs = Requests(2, 40);
  std::vector<StreamResult> got(reqs.size());
  std::vector<std::jthread> clients;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    for (size_t i = 0; i < reqs.size(); ++i) {
      clients.emplace_back([&, i] { got[i] = testing::Generate(c->router->stub(), reqs[i]); });
    }
    ASSERT_TRUE(WaitUntil([&] {
      return c->prefill[0]->drain().num_in_flight() == 1 && c->router->backend().num_queued() == 1;
    }));
    EXPECT_EQ(c->router->backend().window_tokens(), kPrompt);
    EXPECT_EQ(LoopStats(c->decode[0]->engine()).num_awaiting_kv, 1);
  }
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) ExpectExact(got[i], Reference(*c->router, reqs[i]), kPrompt);
  EXPECT_EQ(c->router->backend().window_high_water_tokens(), kPrompt);
  c->ExpectAllReleased();
}

// The queue's two bounds: by count and by tokens. Two requests in the
// window, two queued; every further one is refused RESOURCE_EXHAUSTED at
// once, with the retry hint, and the four go on exactly.
class QueueBoundTest : public ::testing::TestWithParam<bool> {};  // bound by tokens (else by count)

TEST_P(QueueBoundTest, AFullQueueRefusesExactlyTheOverflow) {
  ClusterSpec spec;
  spec.router.max_prefill_tokens_per_worker = 2 * kPrompt;
  if (GetParam()) {
    spec.router.max_queued_tokens = 2 * kPrompt + kPrompt / 2;  // a third 40-token prompt would pass it
  } else {
    spec.router.max_queued = 2;
  }
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const std::vector<v1::GenerateRequest> reqs = Requests(4, 50);
  const std::vector<v1::GenerateRequest> extra = Requests(3, 60);
  std::vector<StreamResult> got(reqs.size());
  std::vector<std::jthread> clients;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    for (size_t i = 0; i < reqs.size(); ++i) {
      clients.emplace_back([&, i] { got[i] = testing::Generate(c->router->stub(), reqs[i]); });
    }
    ASSERT_TRUE(WaitUntil([&] {
      return c->prefill[0]->drain().num_in_flight() == 2 && c->router->backend().num_queued() == 2;
    }));
    for (const v1::GenerateRequest& r : extra) {
      OpenStream s(c->router->stub(), r);
      const StreamResult refused = s.Finish();
      EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.status.error_message();
      EXPECT_NE(refused.status.error_message().find("queue is full"), std::string::npos);
      EXPECT_EQ(refused.num_chunks, 0);
      const auto& trailers = s.ctx.GetServerTrailingMetadata();
      auto hint = trailers.find("grpc-retry-pushback-ms");
      ASSERT_NE(hint, trailers.end());
      EXPECT_EQ(std::string(hint->second.data(), hint->second.size()), std::to_string(kRetryPushbackMs));
    }
    EXPECT_EQ(c->router->backend().num_queued(), 2);
    EXPECT_EQ(c->router->backend().queued_tokens(), 2 * kPrompt);
    EXPECT_EQ(c->router->backend().num_in_flight(), 4);
  }
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) ExpectExact(got[i], Reference(*c->router, reqs[i]), kPrompt);
  c->ExpectAllReleased();
}

INSTANTIATE_TEST_SUITE_P(CountAndTokens, QueueBoundTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Tokens") : std::string("Count");
                         });

// Cancels: one while queued (it leaves the queue, nothing was reserved),
// one during its prefill (it leaves the window, and the next queued request
// takes its place). The others finish exactly; the books balance.
TEST(AdmissionTest, CancelsWhileQueuedAndDuringPrefillKeepTheWindowExact) {
  ClusterSpec spec;
  spec.router.max_prefill_tokens_per_worker = 2 * kPrompt;
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const std::vector<v1::GenerateRequest> reqs = Requests(4, 70);  // 0, 1 in the window; 2, 3 queued
  std::vector<std::unique_ptr<OpenStream>> streams;
  ClusterBackend& b = c->router->backend();
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    for (size_t i = 0; i < reqs.size(); ++i) {
      streams.push_back(std::make_unique<OpenStream>(c->router->stub(), reqs[i]));
      // One at a time, so arrival order is the order here.
      ASSERT_TRUE(WaitUntil([&] { return b.num_in_flight() == static_cast<int>(i + 1); }));
    }
    ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 2 && b.num_queued() == 2; }));
    streams[2]->ctx.TryCancel();  // queued
    ASSERT_TRUE(WaitUntil([&] { return b.num_queued() == 1; }));
    EXPECT_EQ(b.queued_tokens(), kPrompt);
    EXPECT_EQ(b.window_tokens(), 2 * kPrompt);
    EXPECT_EQ(LoopStats(c->decode[0]->engine()).num_awaiting_kv, 2);
    streams[0]->ctx.TryCancel();  // mid-prefill: request 3 takes its place in the window
    ASSERT_TRUE(WaitUntil([&] { return b.num_queued() == 0 && c->prefill[0]->drain().num_in_flight() == 3; }));
    EXPECT_EQ(b.window_tokens(), 2 * kPrompt);
    EXPECT_EQ(b.num_in_window(), 2);
  }
  for (int i : {0, 2}) {
    const StreamResult r = streams[i]->Finish();
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::CANCELLED) << i;
    EXPECT_EQ(r.num_chunks, 0) << i;
  }
  for (int i : {1, 3}) ExpectExact(streams[i]->Finish(), Reference(*c->router, reqs[i]), kPrompt);
  c->ExpectAllReleased();
}

// A decode worker with room for one request at a time: the others' Admits
// are refused and they return to the front of the queue in arrival order,
// which holds (no Admit storm) until a request ends. They stream one after
// the other, first come first served, each exact. (Driven through the
// backend's own sinks, which see the router's order, not the clients'.)
TEST(AdmissionTest, RequestsAFullDecodeWorkerRefusesWaitInArrivalOrder) {
  ClusterSpec spec;
  spec.decode.num_blocks = 4;  // one 40-token prompt (3 blocks) at a time
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const std::vector<v1::GenerateRequest> reqs = Requests(3, 80);
  std::mutex mu;
  std::vector<int> order;                        // the request of each chunk, in sink order
  std::vector<std::vector<int32_t>> tokens(reqs.size());
  std::vector<absl::Status> errors;
  int done = 0;
  ClusterBackend& b = c->router->backend();
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    for (size_t i = 0; i < reqs.size(); ++i) {
      absl::StatusOr<ValidatedRequest> v = c->router->validator().Validate(reqs[i], "r" + std::to_string(i));
      ASSERT_TRUE(v.ok()) << v.status();
      b.Start("r" + std::to_string(i), *v, [&, i](const absl::Status& st, GenerationChunk chunk) {
        std::lock_guard<std::mutex> lock(mu);
        if (!st.ok()) {
          errors.push_back(st);
          ++done;
          return;
        }
        order.push_back(static_cast<int>(i));
        tokens[i].insert(tokens[i].end(), chunk.token_ids.begin(), chunk.token_ids.end());
        if (chunk.finish != ChunkFinish::kNone) ++done;
      });
      // Request 0 reserves (its prefill is held) before 1 arrives; 1 is then
      // refused by the decode worker and queued; 2 queues behind it.
      ASSERT_TRUE(WaitUntil([&] {
        return b.num_queued() == static_cast<int>(i) && c->prefill[0]->drain().num_in_flight() == 1;
      }));
    }
    EXPECT_EQ(b.num_in_window(), 1);
    EXPECT_EQ(b.queued_tokens(), 2 * kPrompt);
    EXPECT_EQ(LoopStats(c->decode[0]->engine()).num_awaiting_kv, 1);
  }
  ASSERT_TRUE(WaitUntil([&] {
    std::lock_guard<std::mutex> lock(mu);
    return done == static_cast<int>(reqs.size());
  }));
  {
    // Not held across ExpectAllReleased: the sinks take `mu` under the
    // backend's locks, so holding it while asking the backend inverts them.
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(errors.empty()) << errors.front();
    ASSERT_FALSE(order.empty());
    std::vector<int> runs = {order.front()};  // the requests in the order their chunks came, runs merged
    for (int r : order) {
      if (r != runs.back()) runs.push_back(r);
    }
    EXPECT_EQ(runs, (std::vector<int>{0, 1, 2}));
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(tokens[i], Reference(*c->router, reqs[i]).tokens) << i;
  }
  c->ExpectAllReleased();
}

}  // namespace
}  // namespace tandem::cluster_backend_test
