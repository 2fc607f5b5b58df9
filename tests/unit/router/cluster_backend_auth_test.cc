// The public API behind API keys (GenerationService with ApiKeyAuth, in
// front of real workers): no key or a wrong one is UNAUTHENTICATED before
// any work reaches a worker; the right key streams exactly what the engine
// gives; a key over its streams or its tokens per minute gets
// RESOURCE_EXHAUSTED with the retry pushback its limit implies.
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "router/api_keys.h"
#include "tests/unit/router/cluster_backend_test_util.h"

namespace tandem::cluster_backend_test {
namespace {

using testing::TestPrompt;

std::string Trailer(const grpc::ClientContext& ctx, const std::string& key) {
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find(key);
  return it == md.end() ? "" : std::string(it->second.data(), it->second.size());
}

TEST(ApiKeyServiceTest, KeysGateTheApiAndEachKeysLimitsHoldExactly) {
  absl::StatusOr<std::unique_ptr<ApiKeyAuth>> auth =
      ApiKeyAuth::FromText("sk-budget name=budget tokens_per_minute=100\nsk-single name=single max_streams=1\n", {});
  ASSERT_TRUE(auth.ok()) << auth.status();
  ClusterSpec spec;
  spec.auth = auth->get();
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(5, 1), 60);  // charges 65 tokens
  const Expected want = Reference(*c->router, req);

  for (const std::string key : {"", "sk-wrong", "sk-budgetx"}) {
    OpenStream s(c->router->stub(), req, key);
    const StreamResult r = s.Finish();
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << key;
    EXPECT_EQ(r.num_chunks, 0);
  }
  EXPECT_EQ(c->prefill[0]->service().kv_bytes_sent(), 0u);  // nothing reached a worker

  {
    OpenStream s(c->router->stub(), req, "sk-budget");
    ExpectExact(s.Finish(), want, 5);
  }
  {
    // 35 of 100 left, 65 asked: 30 short at 100/60000 per ms = 18000 ms (a
    // few ms of refill since may shave the hint).
    OpenStream s(c->router->stub(), req, "sk-budget");
    const StreamResult r = s.Finish();
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    const int64_t pushback = std::stoll("0" + Trailer(s.ctx, "grpc-retry-pushback-ms"));
    EXPECT_GT(pushback, 17000);
    EXPECT_LE(pushback, 18000);
  }
  {
    // One stream at a time for "single": a second is refused while the first is open.
    OpenStream first(c->router->stub(), req, "sk-single");
    ASSERT_TRUE(first.ReadChunks(1));
    OpenStream second(c->router->stub(), req, "sk-single");
    const StreamResult refused = second.Finish();
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_EQ(Trailer(second.ctx, "grpc-retry-pushback-ms"), "1000");
    ExpectExact(first.Finish(), want, 5);
    OpenStream third(c->router->stub(), req, "sk-single");
    ExpectExact(third.Finish(), want, 5);
  }
  c->ExpectAllReleased();
}

}  // namespace
}  // namespace tandem::cluster_backend_test
