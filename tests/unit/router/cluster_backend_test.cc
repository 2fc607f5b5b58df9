// The disaggregated request path in one process: a router (WorkerPool +
// ClusterBackend + GenerationService) in front of prefill and decode
// workers, every one a real gRPC server on 127.0.0.1 (ephemeral ports), KV
// over the loopback transport. Success: the tokens (and text) equal the same
// engine run directly, greedy and seeded, a stop string ends the stream;
// cancel: mid-decode, mid-prefill, and while an Admit is in flight;
// back-pressure: full decode workers queue requests, a full queue refuses;
// refusals before any worker is asked. After every path each engine's pool
// is back to its exact starting counts and the router holds nothing.
// Requests are held in flight deterministically (LoopPause / StepGate on the
// engines' loop threads); waits are bounded and only guard against hangs.
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "router/cluster_backend.h"
#include "tests/testing/inproc_cluster.h"
#include "tests/unit/router/cluster_backend_test_util.h"

namespace tandem::cluster_backend_test {
namespace {

using testing::LoopStats;
using testing::TestPrompt;

TEST(ClusterBackendTest, RequestsStreamTheTokensOfTheEngineRunDirectlyAndEveryBlockComesBack) {
  std::unique_ptr<Cluster> c = Cluster::Start({});
  ASSERT_NE(c, nullptr);
  std::vector<v1::GenerateRequest> reqs = {
      testing::GreedyGenerateRequest(TestPrompt(40, 1), 24), testing::GreedyGenerateRequest(TestPrompt(17, 2), 12),
      testing::GreedyGenerateRequest(TestPrompt(5, 3), 1), testing::GreedyGenerateRequest(TestPrompt(64, 4), 16)};
  v1::GenerateRequest seeded = testing::GreedyGenerateRequest(TestPrompt(23, 5), 20);
  seeded.mutable_sampling()->set_temperature(0.8f);
  seeded.mutable_sampling()->set_seed(1234);
  reqs.push_back(seeded);
  std::vector<Expected> want;
  for (const v1::GenerateRequest& r : reqs) want.push_back(Reference(*c->router, r));

  std::vector<StreamResult> got(reqs.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < reqs.size(); ++i) {
    clients.emplace_back([&, i] { got[i] = testing::Generate(c->router->stub(), reqs[i]); });
  }
  for (std::thread& t : clients) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    ExpectExact(got[i], want[i], static_cast<uint32_t>(reqs[i].prompt_token_ids_size()));
  }
  // max_tokens 1: the prefill's token, then the decode worker's empty finishing chunk.
  EXPECT_EQ(got[2].num_chunks, 2);
  c->ExpectAllReleased();
  // The KV moved is exactly the prompts' blocks.
  uint64_t blocks = 0;
  for (const v1::GenerateRequest& r : reqs) blocks += static_cast<uint64_t>((r.prompt_token_ids_size() + 15) / 16);
  EXPECT_EQ(c->prefill[0]->service().kv_bytes_sent(), blocks * 6 * 2 * 2 * 16 * 32 * 4);
}

TEST(ClusterBackendTest, AStopStringEndsTheStreamAndReleasesTheDecodeSide) {
  std::unique_ptr<Cluster> c = Cluster::Start({});
  ASSERT_NE(c, nullptr);
  v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(30, 6), 60);
  const Expected full = Reference(*c->router, req);
  ASSERT_GT(full.text.size(), 20u);
  const std::string stop = full.text.substr(full.text.size() / 3, 3);
  const size_t at = full.text.find(stop);
  req.mutable_sampling()->add_stop(stop);
  const StreamResult got = testing::Generate(c->router->stub(), req);
  EXPECT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.finish, v1::FINISH_REASON_STOP);
  EXPECT_EQ(got.text, full.text.substr(0, at));
  ASSERT_LE(got.token_ids.size(), full.tokens.size());
  EXPECT_LT(got.token_ids.size(), full.tokens.size());
  EXPECT_EQ(got.token_ids,
            std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + static_cast<long>(got.token_ids.size())));
  c->ExpectAllReleased();
}

TEST(ClusterBackendTest, ClientCancelMidDecodeReleasesTheBlocksOnBothWorkers) {
  std::unique_ptr<Cluster> c = Cluster::Start({});
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 7), 200);
  const Expected want = Reference(*c->router, req);
  c->decode[0]->gate().Arm(3);  // the third decode step holds: 1 + 2 chunks reach the client
  OpenStream s(c->router->stub(), req);
  ASSERT_TRUE(s.ReadChunks(3));
  ASSERT_TRUE(c->decode[0]->gate().WaitHeld());
  EXPECT_EQ(s.result.token_ids, std::vector<int32_t>(want.tokens.begin(), want.tokens.begin() + 3));
  s.ctx.TryCancel();
  const StreamResult got = s.Finish();
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(got.token_ids.size(), 3u);
  c->decode[0]->gate().Release();
  c->ExpectAllReleased();
}

TEST(ClusterBackendTest, ClientCancelDuringPrefillReleasesTheReservationAndThePrefill) {
  std::unique_ptr<Cluster> c = Cluster::Start({});
  ASSERT_NE(c, nullptr);
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    OpenStream s(c->router->stub(), testing::GreedyGenerateRequest(TestPrompt(40, 8), 16));
    ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 1; }));
    EXPECT_EQ(LoopStats(c->decode[0]->engine()).num_awaiting_kv, 1);  // admitted, waiting for KV
    s.ctx.TryCancel();
    const StreamResult got = s.Finish();
    EXPECT_EQ(got.status.error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_EQ(got.num_chunks, 0);
  }
  c->ExpectAllReleased();
  EXPECT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 0; }));
}

// ClusterBackend alone: a request cancelled while its Admit is in flight is
// answered CANCELLED at once; the reservation the Admit then makes is released.
TEST(ClusterBackendTest, CancelWhileAdmitIsInFlightReleasesTheLateReservation) {
  std::unique_ptr<Cluster> c = Cluster::Start({});
  ASSERT_NE(c, nullptr);
  absl::StatusOr<ValidatedRequest> v =
      c->router->validator().Validate(testing::GreedyGenerateRequest(TestPrompt(40, 9), 16), "direct");
  ASSERT_TRUE(v.ok());
  std::mutex mu;
  std::vector<absl::Status> errors;
  int chunks = 0;
  const int64_t prefill_steps = LoopStats(c->prefill[0]->engine()).num_steps;
  {
    testing::LoopPause pause(&c->decode[0]->engine());  // the Admit waits for the engine
    ASSERT_TRUE(pause.paused());
    c->router->backend().Start("direct", *v, [&](const absl::Status& st, GenerationChunk) {
      std::lock_guard<std::mutex> lock(mu);
      if (st.ok()) {
        ++chunks;
      } else {
        errors.push_back(st);
      }
    });
    ASSERT_TRUE(WaitUntil([&] { return c->decode[0]->drain().num_in_flight() == 1; }));
    c->router->backend().Cancel("direct");
    EXPECT_EQ(c->router->backend().num_in_flight(), 0);
  }
  c->ExpectAllReleased();
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(chunks, 0);
  EXPECT_EQ(LoopStats(c->prefill[0]->engine()).num_steps, prefill_steps);  // never prefilled
}

TEST(ClusterBackendTest, FullDecodeWorkersQueueRequestsAndAFullQueueRefuses) {
  ClusterSpec spec;
  spec.decode.num_blocks = 4;  // one 40-token prompt (3 blocks) at a time
  spec.router.max_queued = 1;
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest first = testing::GreedyGenerateRequest(TestPrompt(40, 18), 8);
  const v1::GenerateRequest second = testing::GreedyGenerateRequest(TestPrompt(40, 19), 8);
  const Expected want_first = Reference(*c->router, first), want_second = Reference(*c->router, second);
  StreamResult got_first, got_second;
  std::jthread a, b;
  {
    // The first request holds its 3 reserved blocks while its prefill is held.
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    a = std::jthread([&] { got_first = testing::Generate(c->router->stub(), first); });
    ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 1; }));
    b = std::jthread([&] { got_second = testing::Generate(c->router->stub(), second); });
    ASSERT_TRUE(WaitUntil([&] { return c->router->backend().num_queued() == 1; }));
    const StreamResult third = testing::Generate(c->router->stub(), second);
    EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << third.status.error_message();
    EXPECT_EQ(third.num_chunks, 0);
    const EngineStats d = LoopStats(c->decode[0]->engine());
    EXPECT_EQ(d.num_awaiting_kv, 1);
    EXPECT_EQ(d.kv.num_used_blocks, 3);
  }
  a.join();
  b.join();
  ExpectExact(got_first, want_first, 40);
  ExpectExact(got_second, want_second, 40);
  c->ExpectAllReleased();
}

TEST(ClusterBackendTest, InvalidRequestsAndADrainingRouterAreRefusedBeforeAnyWorkerIsAsked) {
  std::unique_ptr<Cluster> c = Cluster::Start({});
  ASSERT_NE(c, nullptr);
  v1::GenerateRequest oov = testing::GreedyGenerateRequest(TestPrompt(10), 8);
  oov.set_prompt_token_ids(4, 1u << 20);
  EXPECT_EQ(testing::Generate(c->router->stub(), oov).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(testing::Generate(c->router->stub(), testing::GreedyGenerateRequest(TestPrompt(100), 200))
                .status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);  // past the model's context
  c->router->drain().StartDraining();
  EXPECT_EQ(testing::Generate(c->router->stub(), testing::GreedyGenerateRequest(TestPrompt(10), 8)).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(LoopStats(c->prefill[0]->engine()).num_steps, 0);
  EXPECT_EQ(LoopStats(c->decode[0]->engine()).kv.prefix_queries_requests, 0);
  c->ExpectAllReleased();
}

}  // namespace
}  // namespace tandem::cluster_backend_test
