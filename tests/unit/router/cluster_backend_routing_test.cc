// Cache-aware serving through real workers: with prefill worker 0 busy, a
// prompt sharing the prefix that worker computed earlier goes there under
// kv-aware routing (its engine's prefix cache hits: only the new block is
// computed) and to the idle worker under least-loaded (all computed again);
// and a decode worker that holds a prompt's prefix gets only the blocks
// after it (exact KV bytes). The tokens equal the engine run directly.
#include <memory>
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

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class RoutingModeTest : public ::testing::TestWithParam<RoutingMode> {};

TEST_P(RoutingModeTest, ASharedPrefixGoesWhereItIsCachedUnderKvAwareRouting) {
  ClusterSpec spec;
  spec.num_prefill = 2;
  spec.router.routing.mode = GetParam();
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const std::vector<int32_t> prefix = TestPrompt(80, 11);  // 5 blocks of 16
  const v1::GenerateRequest a = testing::GreedyGenerateRequest(Concat(prefix, TestPrompt(16, 12)), 8);
  const v1::GenerateRequest b = testing::GreedyGenerateRequest(TestPrompt(32, 13), 8);  // 2 other blocks
  const v1::GenerateRequest c3 = testing::GreedyGenerateRequest(Concat(prefix, TestPrompt(16, 14)), 8);
  const Expected want_a = Reference(*c->router, a), want_b = Reference(*c->router, b),
                 want_c = Reference(*c->router, c3);
  // A alone: both workers idle and empty, prefill-0 (the first of equals).
  ExpectExact(testing::Generate(c->router->stub(), a), want_a, 96);
  EXPECT_EQ(LoopStats(c->prefill[0]->engine()).kv.prefix_queries_requests, 1);
  StreamResult got_b, got_c;
  std::jthread tb, tc;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    // B (2 blocks) on prefill-0 too: a tie again (2 + 0 either way).
    tb = std::jthread([&] { got_b = testing::Generate(c->router->stub(), b); });
    ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 1; }));
    // C shares A's 5 blocks. kv-aware: prefill-0 costs 1 block to compute +
    // 2 in flight, prefill-1 all 6. least-loaded: prefill-1 has nothing in flight.
    tc = std::jthread([&] { got_c = testing::Generate(c->router->stub(), c3); });
    if (GetParam() == RoutingMode::kKvAware) {
      ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 2; }));
    } else {
      tc.join();  // prefill-1 serves it while prefill-0 is held
    }
  }
  tb.join();
  if (tc.joinable()) tc.join();
  ExpectExact(got_b, want_b, 32);
  ExpectExact(got_c, want_c, 96);
  const EngineStats p0 = LoopStats(c->prefill[0]->engine()), p1 = LoopStats(c->prefill[1]->engine());
  if (GetParam() == RoutingMode::kKvAware) {
    EXPECT_EQ(p0.kv.prefix_queries_requests, 3);
    EXPECT_EQ(p0.kv.prefix_hits_tokens, 80);  // C's 5 prefix blocks, computed once for A
    EXPECT_EQ(p1.kv.prefix_queries_requests, 0);
    EXPECT_EQ(c->router->backend().kv_router().cached_blocks(v1::WORKER_ROLE_PREFILL), 5);
  } else {
    EXPECT_EQ(p0.kv.prefix_queries_requests, 2);
    EXPECT_EQ(p0.kv.prefix_hits_tokens, 0);
    EXPECT_EQ(p1.kv.prefix_queries_requests, 1);
    EXPECT_EQ(p1.kv.prefix_hits_tokens, 0);
    EXPECT_EQ(c->router->backend().kv_router().cached_blocks(v1::WORKER_ROLE_PREFILL), 0);
  }
  // Routed: 6 + 2 + 6 prompt blocks on each side.
  EXPECT_EQ(c->router->backend().kv_router().prompt_blocks(v1::WORKER_ROLE_PREFILL), 14);
  EXPECT_EQ(c->router->backend().kv_router().prompt_blocks(v1::WORKER_ROLE_DECODE), 14);
  c->ExpectAllReleased();
}

TEST(DecodePrefixReuseTest, APrefixTheDecodeWorkerHoldsIsNotShippedAgain) {
  std::unique_ptr<Cluster> c = Cluster::Start({});
  ASSERT_NE(c, nullptr);
  const std::vector<int32_t> prefix = TestPrompt(80, 21);  // 5 blocks of 16
  const v1::GenerateRequest a = testing::GreedyGenerateRequest(Concat(prefix, TestPrompt(20, 22)), 6);
  const v1::GenerateRequest b = testing::GreedyGenerateRequest(Concat(prefix, TestPrompt(20, 23)), 6);
  const Expected want_a = Reference(*c->router, a), want_b = Reference(*c->router, b);
  constexpr uint64_t kBlockBytes = 6 * 2 * 2 * 16 * 32 * 4;  // layers x K,V x heads x tokens x head_dim x fp32
  ExpectExact(testing::Generate(c->router->stub(), a), want_a, 100);
  // A's 100 tokens: 7 blocks shipped; the decode worker keeps its full ones cached.
  EXPECT_EQ(c->prefill[0]->service().kv_bytes_sent(), 7 * kBlockBytes);
  ExpectExact(testing::Generate(c->router->stub(), b), want_b, 100);
  // B shares A's first 5 blocks: the decode worker reused them, only 2 were shipped.
  EXPECT_EQ(c->prefill[0]->service().kv_bytes_sent(), (7 + 2) * kBlockBytes);
  const EngineStats d = LoopStats(c->decode[0]->engine());
  EXPECT_EQ(d.kv.prefix_hits_tokens, 80);
  // The same prompt again: every block but the last (at least one token's
  // KV always comes from the prefill) is held: 1 block shipped.
  ExpectExact(testing::Generate(c->router->stub(), b), want_b, 100);
  EXPECT_EQ(c->prefill[0]->service().kv_bytes_sent(), (7 + 2 + 1) * kBlockBytes);
  c->ExpectAllReleased();
}

INSTANTIATE_TEST_SUITE_P(Modes, RoutingModeTest, ::testing::Values(RoutingMode::kKvAware, RoutingMode::kLeastLoaded),
                         [](const ::testing::TestParamInfo<RoutingMode>& i) {
                           return i.param == RoutingMode::kKvAware ? std::string("KvAware") : std::string("LeastLoaded");
                         });

}  // namespace
}  // namespace tandem::cluster_backend_test
