// The router's timers on a fake clock, through a cluster in one process
// (router, one prefill and two decode workers, real gRPC, loopback KV): no
// renewer thread (lease_renew_interval 0), the test steps the clock and
// runs each beat itself (ClusterBackend::Tick), so every transition is
// exact. A Decode stream idle for one millisecond less than
// decode_idle_timeout is left alone; at the timeout it is cancelled once and
// migrated once (tandem_request_migrations_total counts 1), and the stream
// is token-exact; with its migrations used up the client gets UNAVAILABLE
// after exactly the tokens it had. (The decode worker "stalls" because its
// loop is held after a given step: StepGate.) A stream whose only decode
// worker is gone waits (ClusterOptions::migration_patience): it goes on,
// exact, on a decode worker that registers within the patience, and ends
// UNAVAILABLE after exactly its tokens once the patience is used up.
#include <atomic>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/metrics/registry.h"
#include "gtest/gtest.h"
#include "router/cluster_backend.h"
#include "router/request_metrics.h"
#include "tests/testing/inproc_cluster.h"
#include "tests/unit/router/cluster_backend_test_util.h"

namespace tandem::cluster_backend_test {
namespace {

using testing::TestPrompt;
using Report = ClusterBackend::TickReport;

constexpr std::chrono::milliseconds kIdle{10000};

// A steady clock that moves only when the test says so.
class FakeClock {
 public:
  std::chrono::steady_clock::time_point Now() const {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns_.load()));
  }
  void Advance(std::chrono::nanoseconds d) { ns_ += d.count(); }

 private:
  std::atomic<int64_t> ns_{std::chrono::nanoseconds(std::chrono::hours(1)).count()};
};

// The router as router/main.cc wires its migration metric, on a fake clock
// with no renewer thread.
struct ClockedCluster {
  explicit ClockedCluster(int max_migrations) {
    absl::StatusOr<std::unique_ptr<RequestMetrics>> m =
        RequestMetrics::Create(&registry, {{"model", "m"}, {"role", "router"}}, nullptr);
    EXPECT_TRUE(m.ok()) << m.status();
    metrics = *std::move(m);
    ClusterSpec spec;
    spec.num_decode = 2;
    spec.router.lease_renew_interval = std::chrono::milliseconds(0);
    spec.router.decode_idle_timeout = kIdle;
    spec.router.max_migrations = max_migrations;
    spec.router.now = [c = clock] { return c->Now(); };
    spec.router.on_migration = [m = metrics.get()] { m->CountMigration(); };
    cluster = Cluster::Start(spec);
  }
  // tandem_request_migrations_total as a scrape reads it.
  double Migrations() const {
    std::istringstream text(registry.Serialize());
    for (std::string line; std::getline(text, line);) {
      if (absl::StartsWith(line, "tandem_request_migrations_total{")) return std::stod(line.substr(line.rfind(' ')));
    }
    return -1;
  }
  ClusterBackend& backend() { return cluster->router->backend(); }

  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>();
  metrics::Registry registry;
  std::unique_ptr<RequestMetrics> metrics;
  std::unique_ptr<Cluster> cluster;
};

TEST(FakeClockTest, AStreamIdleForTheTimeoutIsCancelledOnceMigratedOnceAndExact) {
  ClockedCluster cc(/*max_migrations=*/3);
  ASSERT_NE(cc.cluster, nullptr);
  Cluster& c = *cc.cluster;
  const v1::GenerateRequest req = SeededRequest(TestPrompt(40, 14), 60);
  const Expected want = Reference(*c.router, req);
  ASSERT_EQ(want.tokens.size(), 60u);
  // decode-0 takes the request (a tie: the first) and is held after its 5th
  // step: the client has the prefill's token and 4 more, then nothing.
  InProcDecodeWorker& victim = *c.decode[0];
  victim.gate().Arm(5);
  OpenStream s(c.router->stub(), req);
  ASSERT_TRUE(victim.gate().WaitHeld());
  ASSERT_TRUE(s.ReadChunks(5));
  EXPECT_EQ(s.result.token_ids, std::vector<int32_t>(want.tokens.begin(), want.tokens.begin() + 5));
  // Nothing has moved for the timeout less a millisecond: nothing happens.
  cc.clock->Advance(kIdle - std::chrono::milliseconds(1));
  EXPECT_EQ(cc.backend().Tick(), (Report{0, 0, 0}));
  EXPECT_EQ(cc.Migrations(), 0);
  // One millisecond more: the stream is stalled, cancelled, and migrated.
  cc.clock->Advance(std::chrono::milliseconds(1));
  EXPECT_EQ(cc.backend().Tick(), (Report{0, 0, 1}));
  const StreamResult got = s.Finish();
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.token_ids, want.tokens);
  EXPECT_EQ(got.text, want.text);
  EXPECT_EQ(cc.Migrations(), 1);
  // Ended: nothing to renew or cancel.
  EXPECT_EQ(cc.backend().Tick(), (Report{0, 0, 0}));
  victim.gate().Release();
  c.ExpectAllReleased();  // the stalled worker freed the cancelled stream once it ran again
  EXPECT_EQ(cc.Migrations(), 1);
}

TEST(FakeClockTest, AStallPastTheLastMigrationEndsTheStreamUnavailableAfterItsTokens) {
  ClockedCluster cc(/*max_migrations=*/1);
  ASSERT_NE(cc.cluster, nullptr);
  Cluster& c = *cc.cluster;
  const v1::GenerateRequest req = SeededRequest(TestPrompt(40, 15), 60);
  const Expected want = Reference(*c.router, req);
  c.decode[0]->gate().Arm(5);  // 5 tokens on decode-0, as above
  c.decode[1]->gate().Arm(3);  // then 2 more on decode-1
  OpenStream s(c.router->stub(), req);
  ASSERT_TRUE(c.decode[0]->gate().WaitHeld());
  ASSERT_TRUE(s.ReadChunks(5));
  cc.clock->Advance(kIdle);
  EXPECT_EQ(cc.backend().Tick(), (Report{0, 0, 1}));
  ASSERT_TRUE(c.decode[1]->gate().WaitHeld());
  ASSERT_TRUE(s.ReadChunks(2));
  EXPECT_EQ(cc.Migrations(), 1);
  // The stream on decode-1 started at the moment of the migration: it is
  // idle for the timeout only once the clock moves on by that much again.
  cc.clock->Advance(kIdle - std::chrono::milliseconds(1));
  EXPECT_EQ(cc.backend().Tick(), (Report{0, 0, 0}));
  cc.clock->Advance(std::chrono::milliseconds(1));
  EXPECT_EQ(cc.backend().Tick(), (Report{0, 0, 1}));
  const StreamResult got = s.Finish();
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
  EXPECT_NE(got.status.error_message().find("stalled"), std::string::npos) << got.status.error_message();
  EXPECT_EQ(got.token_ids, std::vector<int32_t>(want.tokens.begin(), want.tokens.begin() + 7));
  EXPECT_EQ(cc.Migrations(), 1);
  c.decode[0]->gate().Release();
  c.decode[1]->gate().Release();
  c.ExpectAllReleased();
}

// One prefill and one decode worker (decode-0) on a fake clock, with
// `patience`; decode-0 is held after 5 steps, then stopped: the stream's
// migration finds no decode worker to admit it (decode-0 refuses
// connections) and waits in the queue.
struct StrandedStream {
  static constexpr std::chrono::milliseconds kPatience{20000};
  StrandedStream() {
    ClusterSpec spec;
    spec.router.lease_renew_interval = std::chrono::milliseconds(0);
    spec.router.migration_patience = kPatience;
    spec.router.now = [c = clock] { return c->Now(); };
    spec.router.on_migration = [this] { ++migrations; };
    cluster = Cluster::Start(spec);
  }
  // Starts the request and strands it; false on a failed step.
  bool Strand(const v1::GenerateRequest& req) {
    Cluster& c = *cluster;
    c.decode[0]->gate().Arm(5);
    stream = std::make_unique<OpenStream>(c.router->stub(), req);
    if (!c.decode[0]->gate().WaitHeld() || !stream->ReadChunks(5)) return false;
    c.decode[0]->StopServer();  // the Decode stream breaks; Admits are refused
    return WaitUntil([&] { return c.router->backend().num_queued() == 1; });
  }
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>();
  std::atomic<int> migrations{0};
  std::unique_ptr<Cluster> cluster;
  std::unique_ptr<OpenStream> stream;
};

TEST(MigrationPatienceTest, AStreamWithNoDecodeWorkerLeftWaitsForOneAndGoesOnExactly) {
  StrandedStream t;
  ASSERT_NE(t.cluster, nullptr);
  Cluster& c = *t.cluster;
  const v1::GenerateRequest req = SeededRequest(TestPrompt(40, 16), 40);
  const Expected want = Reference(*c.router, req);
  ASSERT_TRUE(t.Strand(req));
  // Beats within the patience: tried again (refused again), still waiting.
  t.clock->Advance(StrandedStream::kPatience / 2);
  c.router->backend().Tick();
  EXPECT_TRUE(WaitUntil([&] { return c.router->backend().num_queued() == 1; }));
  // A decode worker registers: the next beat continues the stream there.
  testing::DecodeWorkerOptions o;
  o.worker_id = "decode-1";
  absl::StatusOr<std::unique_ptr<InProcDecodeWorker>> fresh = InProcDecodeWorker::Start(o);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  c.router->pool().Add(v1::WORKER_ROLE_DECODE, "decode-1", (*fresh)->address(), /*registered=*/true);
  c.decode.push_back(*std::move(fresh));
  t.clock->Advance(std::chrono::milliseconds(1000));
  c.router->backend().Tick();
  const StreamResult got = t.stream->Finish();
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.token_ids, want.tokens);
  EXPECT_EQ(got.text, want.text);
  EXPECT_EQ(t.migrations.load(), 1);  // one migration, however many tries it waited
  c.decode[0]->gate().Release();
  c.ExpectAllReleased();
}

TEST(MigrationPatienceTest, AStreamStrandedPastThePatienceEndsUnavailableAfterItsTokens) {
  StrandedStream t;
  ASSERT_NE(t.cluster, nullptr);
  Cluster& c = *t.cluster;
  const v1::GenerateRequest req = SeededRequest(TestPrompt(40, 17), 40);
  const Expected want = Reference(*c.router, req);
  ASSERT_TRUE(t.Strand(req));
  // One millisecond short of the patience: it waits on.
  t.clock->Advance(StrandedStream::kPatience - std::chrono::milliseconds(1));
  c.router->backend().Tick();
  EXPECT_TRUE(WaitUntil([&] { return c.router->backend().num_queued() == 1; }));
  EXPECT_EQ(c.router->backend().num_in_flight(), 1);
  // At the patience: the next refusal ends it.
  t.clock->Advance(std::chrono::milliseconds(1));
  c.router->backend().Tick();
  const StreamResult got = t.stream->Finish();
  EXPECT_EQ(got.status.error_code(), grpc::StatusCode::UNAVAILABLE) << got.status.error_message();
  EXPECT_NE(got.status.error_message().find("no decode worker admitted"), std::string::npos)
      << got.status.error_message();
  EXPECT_EQ(got.token_ids, std::vector<int32_t>(want.tokens.begin(), want.tokens.begin() + 5));
  EXPECT_EQ(t.migrations.load(), 1);
  c.decode[0]->gate().Release();
  c.ExpectAllReleased();
}

}  // namespace
}  // namespace tandem::cluster_backend_test
