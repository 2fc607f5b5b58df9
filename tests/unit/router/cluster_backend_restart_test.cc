// Lost decode reservations, through a cluster in one process (router,
// prefill and decode workers, real gRPC, loopback KV), while the request
// waits for its prefill (the prefill worker's loop is held):
//   - the decode worker restarts (its process stops; a new one registers the
//     same worker id with a new incarnation, on the old port or a new one):
//     the router re-admits the request on the new process at once, without
//     waiting for the prefill to fail or a lease to run out;
//   - the decode worker forgets the reservation (as when its lease ran out):
//     the router's next renewal (a Tick, no renewer thread) hears "unknown"
//     and re-admits it (a migration), or, with migrations off, ends it
//     UNAVAILABLE.
// Every stream equals the engine run directly; every pool is back to its start.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "gtest/gtest.h"
#include "router/cluster_backend.h"
#include "tests/testing/inproc_cluster.h"
#include "tests/unit/router/cluster_backend_test_util.h"

namespace tandem::cluster_backend_test {
namespace {

using testing::LoopStats;
using testing::TestPrompt;

int PortOf(const std::string& address) {
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) << address;
  return port;
}

class DecodeRestartTest : public ::testing::TestWithParam<bool> {};  // the new process on the old port?

TEST_P(DecodeRestartTest, AReservationOnARestartedDecodeWorkerIsReadmittedAtOnceAndTheStreamIsExact) {
  ClusterSpec spec;
  spec.num_decode = 0;  // registered below, with an incarnation
  spec.router.lease_renew_interval = std::chrono::milliseconds(0);  // no renewals: only the incarnation can tell
  std::atomic<int> migrations{0};
  spec.router.on_migration = [&migrations] { ++migrations; };
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  testing::DecodeWorkerOptions o;
  o.worker_id = "decode-0";
  absl::StatusOr<std::unique_ptr<InProcDecodeWorker>> old = InProcDecodeWorker::Start(o);
  ASSERT_TRUE(old.ok()) << old.status();
  WorkerPool& pool = c->router->pool();
  pool.Add(v1::WORKER_ROLE_DECODE, "decode-0", (*old)->address(), /*registered=*/true, false, "1111");
  const v1::GenerateRequest req = SeededRequest(/*seed=*/4321, /*frequency_penalty=*/0, TestPrompt(40, 21), 24);
  const Expected want = Reference(*c->router, req);
  StreamResult got;
  std::unique_ptr<InProcDecodeWorker> fresh;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    std::jthread client([&] { got = testing::Generate(c->router->stub(), req); });
    ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 1; }));
    ASSERT_EQ(LoopStats((*old)->engine()).num_awaiting_kv, 1);
    // The process holding the reservation goes away...
    (*old)->DropTransport();
    (*old)->StopServer();
    // ...and comes back: the same worker id, a new incarnation.
    o.port = GetParam() ? PortOf((*old)->address()) : 0;
    absl::StatusOr<std::unique_ptr<InProcDecodeWorker>> w = InProcDecodeWorker::Start(o);
    ASSERT_TRUE(w.ok()) << w.status();
    fresh = *std::move(w);
    EXPECT_EQ(fresh->address() == (*old)->address(), GetParam());
    pool.Add(v1::WORKER_ROLE_DECODE, "decode-0", fresh->address(), /*registered=*/true, false, "2222");
    // Re-admitted on the new process while the old prefill is still held:
    // the registration told, not a failure of the prefill.
    ASSERT_TRUE(WaitUntil([&] { return LoopStats(fresh->engine()).num_awaiting_kv == 1; }));
    EXPECT_EQ(migrations.load(), 1);
    pause.Resume();
    client.join();
  }
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.token_ids, want.tokens);
  EXPECT_EQ(got.text, want.text);
  EXPECT_EQ(migrations.load(), 1);
  // The old engine keeps the reservation nobody can release (its lease ends it).
  ClusterBackend& b = c->router->backend();
  EXPECT_TRUE(WaitUntil([&] { return b.num_in_flight() == 0; }));
  EXPECT_TRUE(WaitUntil([&] { return c->router->pool_in_flight() == 0; })) << c->router->pool_in_flight();
  EXPECT_EQ(b.window_tokens(), 0);
  EXPECT_EQ(b.queued_tokens(), 0);
  Cluster::ExpectIdle(c->prefill[0]->engine(), c->prefill[0]->model().ranks[0].shape.num_blocks, "prefill");
  Cluster::ExpectIdle(fresh->engine(), fresh->model().ranks[0].shape.num_blocks, "new decode");
  c->router.reset();  // before the workers it knows go
}

INSTANTIATE_TEST_SUITE_P(NewAndSameAddress, DecodeRestartTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("SamePort") : std::string("NewPort");
                         });

// The decode worker forgets a reservation whose prefill is still held (a
// Release from elsewhere here; a lease that ran out, or a restart the router
// did not hear of, look the same): the next renewal answers "unknown".
class LostReservationTest : public ::testing::TestWithParam<int> {};  // max_migrations

TEST_P(LostReservationTest, ARenewalAnsweredUnknownReadmitsTheRequestOrEndsItUnavailable) {
  using Report = ClusterBackend::TickReport;
  ClusterSpec spec;
  spec.router.lease_renew_interval = std::chrono::milliseconds(0);  // renewals only when the test Ticks
  spec.router.max_migrations = GetParam();
  std::atomic<int> migrations{0};
  spec.router.on_migration = [&migrations] { ++migrations; };
  std::unique_ptr<Cluster> c = Cluster::Start(spec);
  ASSERT_NE(c, nullptr);
  ClusterBackend& b = c->router->backend();
  const v1::GenerateRequest req = testing::GreedyGenerateRequest(TestPrompt(40, 22), 12);
  const Expected want = Reference(*c->router, req);
  std::unique_ptr<DirectStream> s;
  {
    testing::LoopPause pause(&c->prefill[0]->engine());
    ASSERT_TRUE(pause.paused());
    s = std::make_unique<DirectStream>(b, c->router->validator(), req, "lost");
    ASSERT_TRUE(WaitUntil([&] { return c->prefill[0]->drain().num_in_flight() == 1; }));
    ASSERT_EQ(LoopStats(c->decode[0]->engine()).num_awaiting_kv, 1);
    EXPECT_EQ(b.Tick(), (Report{1, 0, 0}));  // renewed, known
    grpc::ClientContext ctx;
    ctx.set_deadline(testing::Deadline());
    v1::ReleaseRequest rel;
    rel.set_request_id("lost");  // the first attempt's id at the workers
    v1::ReleaseResponse rel_resp;
    ASSERT_TRUE(c->decode[0]->stub().Release(&ctx, rel, &rel_resp).ok());
    // Tick waits for the answer and acts on it: one reservation lost.
    EXPECT_EQ(b.Tick(), (Report{1, 1, 0}));
    if (GetParam() > 0) {
      EXPECT_EQ(migrations.load(), 1);
      // Re-admitted (as the request's next attempt) while the prefill is
      // held; its new Prefill reaches the prefill worker beside the old,
      // cancelled one (whose ticket the held loop still keeps).
      ASSERT_TRUE(WaitUntil([&] {
        return c->prefill[0]->drain().num_in_flight() == 2 && LoopStats(c->decode[0]->engine()).num_awaiting_kv == 1;
      }));
      EXPECT_EQ(b.Tick(), (Report{1, 0, 0}));  // the new reservation is known
    } else {
      ASSERT_TRUE(s->WaitDone());
      EXPECT_EQ(s->status().code(), absl::StatusCode::kUnavailable) << s->status();
      EXPECT_NE(s->status().message().find("lost the request's KV reservation"), std::string::npos) << s->status();
      EXPECT_TRUE(s->tokens().empty());
      EXPECT_EQ(migrations.load(), 0);
      EXPECT_EQ(b.Tick(), (Report{0, 0, 0}));
    }
  }
  ASSERT_TRUE(s->WaitDone());
  if (GetParam() > 0) {
    EXPECT_TRUE(s->status().ok()) << s->status();
    EXPECT_EQ(s->tokens(), want.tokens);
    EXPECT_EQ(migrations.load(), 1);
  }
  EXPECT_EQ(b.Tick(), (Report{0, 0, 0}));
  c->ExpectAllReleased();
}

INSTANTIATE_TEST_SUITE_P(Migrations, LostReservationTest, ::testing::Values(0, 3));

}  // namespace
}  // namespace tandem::cluster_backend_test
