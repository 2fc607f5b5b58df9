// Token-replay migration through a cluster in one process (router, one
// prefill worker, two decode workers, real gRPC, loopback KV): the decode
// worker streaming a request stops mid-stream, and the router continues the
// same client stream on the other decode worker. The client gets every token
// exactly once, equal to an uninterrupted run, greedy and seeded (with a
// frequency penalty, so the replayed tokens count as generated), and every
// pool is back to its start. With nowhere to go, or past --max-migrations,
// the stream ends UNAVAILABLE after its partial output.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "router/cluster_backend.h"
#include "tests/testing/inproc_cluster.h"
#include "tests/unit/router/cluster_backend_test_util.h"

namespace tandem::cluster_backend_test {
namespace {

using testing::TestPrompt;

class MigrationTest : public ::testing::TestWithParam<bool> {};  // seeded?

TEST_P(MigrationTest, ADecodeWorkerStoppedMidStreamIsReplacedAndTheStreamIsExact) {
  ClusterSpec spec;
  spec.num_decode = 2;
  std::atomic<int> migrations{0};
  spec.router.on_migration = [&migrations] { ++migrations; };
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const std::vector<int32_t> prompt = TestPrompt(40, 14);
  const v1::GenerateRequest req = GetParam() ? SeededRequest(prompt, 60) : testing::GreedyGenerateRequest(prompt, 60);
  const Expected want = Reference(*c->router, req);
  ASSERT_EQ(want.tokens.size(), 60u);
  // decode-0 takes the request (both idle: ties go to the first) and is held
  // after its 5th step, so the client has exactly 5 tokens when it stops.
  InProcDecodeWorker& victim = *c->decode[0];
  victim.gate().Arm(5);
  OpenStream s(c->router->stub(), req);
  ASSERT_TRUE(victim.gate().WaitHeld());
  victim.StopServer();
  const StreamResult got = s.Finish();
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.token_ids, want.tokens);
  EXPECT_EQ(got.text, want.text);
  EXPECT_EQ(migrations.load(), 1);
  victim.gate().Release();
  c->ExpectAllReleased();
}

INSTANTIATE_TEST_SUITE_P(GreedyAndSeeded, MigrationTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("Seeded") : std::string("Greedy");
                         });

// A decode worker that stops answering without dying (its loop is held, as
// a SIGSTOPped or wedged process would be): past the idle timeout the router
// cancels the stream and migrates the request; the stream is exact.
TEST(MigrationStallTest, AStalledDecodeStreamIsMigratedAndExact) {
  ClusterSpec spec;
  spec.num_decode = 2;
  spec.router.decode_idle_timeout = std::chrono::milliseconds(500);
  spec.router.lease_renew_interval = std::chrono::milliseconds(50);  // the stall check's beat
  std::atomic<int> migrations{0};
  spec.router.on_migration = [&migrations] { ++migrations; };
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = SeededRequest(TestPrompt(40, 14), 60);
  const Expected want = Reference(*c->router, req);
  InProcDecodeWorker& victim = *c->decode[0];
  victim.gate().Arm(5);
  OpenStream s(c->router->stub(), req);
  ASSERT_TRUE(victim.gate().WaitHeld());  // held until after the stream is done: a stall, not a death
  const StreamResult got = s.Finish();
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.token_ids, want.tokens);
  EXPECT_EQ(migrations.load(), 1);
  victim.gate().Release();
  c->ExpectAllReleased();  // the stalled worker freed the cancelled stream once it ran again
}

// The decode worker dies while the prefill for its reservation is still
// queued: the prefill's KV transfer fails at the destination (ABORTED), the
// router re-admits the request on the other decode worker, does not blame
// the (only) prefill worker, and the stream is exact from its first token.
TEST(MigrationBeforeFirstTokenTest, ADestinationThatDiesDuringThePrefillIsReplaced) {
  ClusterSpec spec;
  spec.num_decode = 2;
  std::atomic<int> migrations{0};
  spec.router.on_migration = [&migrations] { ++migrations; };
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = SeededRequest(TestPrompt(40, 14), 24);
  const Expected want = Reference(*c->router, req);
  StreamResult got;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    std::jthread client([&] { got = testing::Generate(c->router->stub(), req); });
    ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 1; }));
    // decode-0 (the first on a tie) holds the reservation: it goes away.
    ASSERT_EQ(testing::LoopStats(c->decode[0]->engine()).num_awaiting_kv, 1);
    c->decode[0]->DropTransport();
    c->decode[0]->StopServer();
    pause.Resume();
    client.join();
  }
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.token_ids, want.tokens);
  EXPECT_EQ(migrations.load(), 1);
  // decode-0's engine still holds the reservation it was never told to drop
  // (its server is gone); it expires with the lease. The rest is back.
  EXPECT_TRUE(WaitUntil([&] { return c->router->backend().num_in_flight() == 0; }));
  Cluster::ExpectIdle(c->prefill[0]->engine(), c->prefill[0]->model().ranks[0].shape.num_blocks, "prefill");
  Cluster::ExpectIdle(c->decode[1]->engine(), c->decode[1]->model().ranks[0].shape.num_blocks, "decode-1");
}

TEST(MigrationLimitTest, WithMigrationsOffTheStreamEndsUnavailableAfterItsPartialOutput) {
  ClusterSpec spec;
  spec.num_decode = 2;
  spec.router.max_migrations = 0;
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 14), 60);
  const Expected want = Reference(*c->router, req);
  InProcDecodeWorker& victim = *c->decode[0];
  victim.gate().Arm(3);
  OpenStream s(c->router->stub(), req);
  ASSERT_TRUE(victim.gate().WaitHeld());
  victim.StopServer();
  const StreamResult got = s.Finish();
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
  ASSERT_LE(got.token_ids.size(), want.tokens.size());
  EXPECT_EQ(got.token_ids, std::vector<int32_t>(want.tokens.begin(), want.tokens.begin() + got.token_ids.size()));
  victim.gate().Release();
  c->ExpectAllReleased();
}

}  // namespace
}  // namespace tandem::cluster_backend_test
