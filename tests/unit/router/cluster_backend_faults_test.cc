// The disaggregated request path in one process (see cluster_backend_test.cc)
// when workers fail or time out: an unreachable prefill or decode worker, a
// prefill or decode worker stopped mid-request (its server shut down, as when
// its process dies; retried on a survivor where one exists), a reservation
// that expires before its KV arrives, an Admit or a prefill past the router's
// timeouts. Each gets its exact status code, and every surviving engine's
// pool is back to its exact starting counts.
#include <atomic>
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

TEST(ClusterBackendTest, AnUnreachablePrefillWorkerIsUnavailableAndTheReservationIsReleased) {
  testing::DeadAddress dead;
  ASSERT_TRUE(dead.ok());
  ClusterSpec spec;
  spec.num_prefill = 0;
  spec.dead_prefill = {dead.address()};
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const StreamResult got = testing::Generate(c->router->stub(), testing::GreedyGenerateRequest(TestPrompt(40), 8));
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
  EXPECT_EQ(got.num_chunks, 0);
  c->ExpectAllReleased();
}

TEST(ClusterBackendTest, AnUnreachablePrefillWorkerIsSkippedForALiveOne) {
  testing::DeadAddress dead;
  ASSERT_TRUE(dead.ok());
  ClusterSpec spec;
  spec.dead_prefill = {dead.address()};  // listed first: tried first
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  for (int i = 0; i < 2; ++i) {
    const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 10 + i), 10);
    ExpectExact(testing::Generate(c->router->stub(), req), Reference(*c->router, req), 40);
  }
  c->ExpectAllReleased();
}

TEST(ClusterBackendTest, AnUnreachableDecodeWorkerIsUnavailableBeforeAnyPrefill) {
  testing::DeadAddress dead;
  ASSERT_TRUE(dead.ok());
  ClusterSpec spec;
  spec.num_decode = 0;
  spec.dead_decode = {dead.address()};
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const StreamResult got = testing::Generate(c->router->stub(), testing::GreedyGenerateRequest(TestPrompt(40), 8));
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
  EXPECT_EQ(LoopStats(c->prefill[0]->engine()).num_steps, 0);
  c->ExpectAllReleased();
}

// A prefill worker stops (its server shuts down, as when the process dies)
// while it holds the request: the router retries on the other prefill
// worker with the same reservation, and the client sees nothing of it.
TEST(ClusterBackendTest, APrefillWorkerStoppedMidPrefillIsRetriedOnTheSurvivor) {
  ClusterSpec spec;
  spec.num_prefill = 2;
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 12), 12);
  const Expected want = Reference(*c->router, req);
  InProcPrefillWorker& victim = *c->prefill[0];  // listed first: chosen first
  StreamResult got;
  {
    testing::LoopPause pause(&victim.engine());
    ASSERT_TRUE(pause.paused());
    std::jthread client([&] { got = testing::Generate(c->router->stub(), req); });
    ASSERT_TRUE(WaitUntil([&] { return victim.drain().num_in_flight() == 1; }));
    // Shutdown returns once the victim's calls are done, which needs its engine.
    std::jthread stopper([&] { victim.StopServer(); });
    client.join();
    pause.Resume();
    stopper.join();
  }
  ExpectExact(got, want, 40);
  c->ExpectAllReleased();
}

// With no other prefill worker, the stopped worker's UNAVAILABLE is retried
// and the retry finds none: the request fails UNAVAILABLE ("no prefill worker
// available") before any token, and the reservation is released.
TEST(ClusterBackendTest, TheOnlyPrefillWorkerStoppedMidPrefillFailsTheRequest) {
  std::unique_ptr<Cluster> c = Cluster::Start({});
  ASSERT_NE(c, nullptr);
  InProcPrefillWorker& victim = *c->prefill[0];
  StreamResult got;
  {
    testing::LoopPause pause(&victim.engine());
    ASSERT_TRUE(pause.paused());
    const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 13), 12);
    std::jthread client([&] { got = testing::Generate(c->router->stub(), req); });
    ASSERT_TRUE(WaitUntil([&] { return victim.drain().num_in_flight() == 1; }));
    std::jthread stopper([&] { victim.StopServer(); });
    client.join();
    pause.Resume();
    stopper.join();
  }
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
  EXPECT_EQ(got.num_chunks, 0);
  c->ExpectAllReleased();
}

// The only decode worker stops while streaming: the router's migration finds
// no other decode worker, waits for one (a short patience here) and then
// ends the client's stream UNAVAILABLE after the tokens it already had; the
// prefill side holds nothing.
TEST(ClusterBackendTest, ADecodeWorkerStoppedMidDecodeEndsTheStreamAndTheSurvivorsHoldNothing) {
  ClusterSpec spec;
  spec.router.migration_patience = std::chrono::milliseconds(300);
  spec.router.lease_renew_interval = std::chrono::milliseconds(100);
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 14), 100);
  const Expected want = Reference(*c->router, req);
  InProcDecodeWorker& victim = *c->decode[0];
  victim.gate().Arm(2);
  OpenStream s(c->router->stub(), req);
  ASSERT_TRUE(s.ReadChunks(2));
  ASSERT_TRUE(victim.gate().WaitHeld());
  victim.StopServer();  // its Decode stream is cancelled; the reactor finishes without the engine
  const StreamResult got = s.Finish();
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
  EXPECT_EQ(got.token_ids, std::vector<int32_t>(want.tokens.begin(), want.tokens.begin() + 2));
  victim.gate().Release();
  c->ExpectAllReleased();  // the decode engine too: the stream's cancel reached it
}

// A lease nobody renews (the router's renewals are off here, as when the
// router is partitioned from the decode worker): the reservation expires
// while the prefill waits, so the prefill worker, past the lease the router
// gave it (ship_within_ms), ships nothing and answers ABORTED. With
// migrations the router admits the request again and the stream is exact;
// without, the client sees UNAVAILABLE (retry) before any token.
class UnrenewedLeaseTest : public ::testing::TestWithParam<int> {};  // max_migrations

TEST_P(UnrenewedLeaseTest, AReservationThatExpiresBeforeItsKvArrivesIsMigratedOrUnavailable) {
  ClusterSpec spec;
  spec.decode.reservation_timeout = std::chrono::milliseconds(100);
  spec.router.lease_renew_interval = std::chrono::milliseconds(0);  // no renewer thread
  spec.router.max_migrations = GetParam();
  std::atomic<int> migrations{0};
  spec.router.on_migration = [&migrations] { ++migrations; };
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 15), 12);
  const Expected want = Reference(*c->router, req);
  StreamResult got;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    std::jthread client([&] { got = testing::Generate(c->router->stub(), req); });
    ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 1; }));
    const EngineStats d = testing::WaitIdle(c->decode[0]->engine());  // expired and freed
    EXPECT_TRUE(testing::Idle(d)) << testing::Describe(d);
    pause.Resume();
    client.join();
  }
  if (GetParam() > 0) {
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    EXPECT_EQ(got.token_ids, want.tokens);
    EXPECT_EQ(migrations.load(), 1);
  } else {
    EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
    EXPECT_NE(got.status.error_message().find("lease"), std::string::npos) << got.status.error_message();
    EXPECT_EQ(got.num_chunks, 0);
    EXPECT_EQ(migrations.load(), 0);
  }
  c->ExpectAllReleased();
}

INSTANTIATE_TEST_SUITE_P(Migrations, UnrenewedLeaseTest, ::testing::Values(0, 3));

// The router renews the lease of a reservation whose prefill waits far
// longer than the lease (the prefill worker's loop is held): the request
// finishes exactly, and every pool is back to its start.
TEST(ClusterBackendTest, ARenewedReservationOutlivesItsLeaseWhileThePrefillWaits) {
  ClusterSpec spec;
  spec.decode.reservation_timeout = std::chrono::milliseconds(1000);
  spec.router.lease_renew_interval = std::chrono::milliseconds(50);
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 15), 12);
  const Expected want = Reference(*c->router, req);
  StreamResult got;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    std::jthread client([&] { got = testing::Generate(c->router->stub(), req); });
    ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 1; }));
    // Three leases long: without renewals the reservation would be gone.
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));
    EXPECT_EQ(testing::LoopStats(c->decode[0]->engine()).num_awaiting_kv, 1);
    pause.Resume();
    client.join();
  }
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.token_ids, want.tokens);
  c->ExpectAllReleased();
}

// An Admit that passes the router's admit timeout (a stalled decode worker,
// tried twice): the client gets UNAVAILABLE (retry; DEADLINE_EXCEEDED is
// only ever the client's own deadline), and the reservations the decode
// worker makes after the router gave up are released by the router (not
// left to the decode worker's reservation timeout, far longer than the test).
TEST(ClusterBackendTest, AnAdmitPastTheRouterTimeoutIsUnavailableAndItsLateReservationIsReleased) {
  ClusterSpec spec;
  spec.router.admit_timeout = std::chrono::milliseconds(1000);
  spec.decode.reservation_timeout = std::chrono::minutes(10);
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  StreamResult got;
  {
    testing::LoopPause pause(&c->decode[0]->engine());  // the Admit's reservation waits behind this
    ASSERT_TRUE(pause.paused());
    got = testing::Generate(c->router->stub(), testing::GreedyGenerateRequest(TestPrompt(40, 20), 12));
  }
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
  EXPECT_NE(got.status.error_message().find("no decode worker admitted"), std::string::npos)
      << got.status.error_message();
  EXPECT_EQ(got.num_chunks, 0);
  c->ExpectAllReleased();
  EXPECT_EQ(LoopStats(c->prefill[0]->engine()).num_steps, 0);
}

// A prefill that passes the router's prefill timeout is retried on another
// prefill worker (same reservation); the late worker ships nothing.
TEST(ClusterBackendTest, APrefillTimeoutIsRetriedOnAnotherPrefillWorker) {
  ClusterSpec spec;
  spec.num_prefill = 2;
  spec.router.prefill_timeout = std::chrono::milliseconds(2000);  // the retry must fit in it too
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 16), 12);
  const Expected want = Reference(*c->router, req);
  StreamResult got;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    got = testing::Generate(c->router->stub(), req);
  }
  ExpectExact(got, want, 40);
  c->ExpectAllReleased();
  EXPECT_EQ(c->prefill[0]->service().kv_bytes_sent(), 0u);
  EXPECT_EQ(c->prefill[1]->service().kv_bytes_sent(), 3u * 6 * 2 * 2 * 16 * 32 * 4);
}

// With one prefill worker, a prefill timeout leaves nobody to retry on.
TEST(ClusterBackendTest, APrefillTimeoutWithNoOtherPrefillWorkerIsUnavailable) {
  ClusterSpec spec;
  spec.router.prefill_timeout = std::chrono::milliseconds(300);
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  StreamResult got;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    got = testing::Generate(c->router->stub(), testing::GreedyGenerateRequest(TestPrompt(40, 17), 12));
  }
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
  EXPECT_EQ(got.num_chunks, 0);
  c->ExpectAllReleased();
}

}  // namespace
}  // namespace tandem::cluster_backend_test
