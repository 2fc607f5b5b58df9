// Cache-aware routing through the WorkerPool with scripted prompts and
// loads (no network): KvRouter's exact choices in each mode, the load a
// choice adds until Done, its books (routed and predicted-hit blocks), a
// worker's own block size, and a restarted worker's entries dropped by the
// ClusterBackend's gone listener.
#include "router/kv_router.h"

#include <string>
#include <vector>

#include "engine/core/block_hash.h"
#include "gtest/gtest.h"
#include "router/cluster_backend.h"
#include "router/worker_pool.h"

namespace tandem {
namespace {

constexpr auto kPrefill = v1::WORKER_ROLE_PREFILL;
constexpr auto kDecode = v1::WORKER_ROLE_DECODE;

// `blocks` blocks of 16 tokens: the first `shared` from `prefix`'s run, the
// rest from `own`'s (distinct runs never share a block).
std::vector<int32_t> Prompt(int prefix, int shared, int own, int blocks) {
  std::vector<int32_t> t;
  for (int b = 0; b < blocks; ++b) {
    for (int i = 0; i < 16; ++i) t.push_back(b < shared ? prefix * 1000 + b * 16 + i : own * 1000 + b * 16 + i);
  }
  return t;
}

struct Routed {
  std::string worker;
  int64_t load_blocks = 0;
};

Routed Route(WorkerPool& pool, KvRouter& router, v1::WorkerRole role, std::vector<int32_t> tokens,
             WorkerHandle* handle = nullptr) {
  KvRouter::Prompt prompt(std::move(tokens));
  absl::StatusOr<WorkerHandle> w = pool.Acquire(role, {}, router.ChooserFor(role, &prompt));
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return {};
  if (handle != nullptr) *handle = *w;
  return {w->id, w->load_blocks};
}

std::unique_ptr<WorkerPool> TwoOfEach() {
  auto pool = std::make_unique<WorkerPool>();
  pool->Add(kPrefill, "p0", "127.0.0.1:1");
  pool->Add(kPrefill, "p1", "127.0.0.1:2");
  pool->Add(kDecode, "d0", "127.0.0.1:3");
  pool->Add(kDecode, "d1", "127.0.0.1:4");
  return pool;
}

TEST(KvRouterTest, KvAwareWeighsTheHeldPrefixAgainstTheBlocksInFlight) {
  std::unique_ptr<WorkerPool> pool = TwoOfEach();
  KvRouter router({RoutingMode::kKvAware, 1.0, 1000});
  WorkerHandle a;
  // A (4 blocks): both idle and empty, a tie: the first. It adds 4 blocks to compute.
  EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(1, 3, 2, 4), &a).worker, "p0");
  // B (4 other blocks): p0 costs 4 + 4 in flight, p1 costs 4.
  EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(5, 3, 6, 4)).worker, "p1");
  // C shares B's first 3 blocks: p1 costs 1 + 4, p0 4 + 4. It adds 1 block to compute.
  const Routed c = Route(*pool, router, kPrefill, Prompt(5, 3, 7, 4));
  EXPECT_EQ(c.worker, "p1");
  EXPECT_EQ(c.load_blocks, 1);
  // A's prefill ends; D shares A's first 3 blocks: p0 costs 1, p1 4 + 5.
  pool->Done(kPrefill, a);
  EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(1, 3, 8, 4)).worker, "p0");
  // E shares B's 3 blocks, but p1's 5 blocks in flight outweigh them: p1
  // costs 1 + 5 = 6, p0 4 + 1 = 5.
  EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(5, 3, 9, 4)).worker, "p0");
  // The books: 5 prompts of 4 blocks; hits predicted for C (3) and D (3);
  // E went where none of its blocks was.
  EXPECT_EQ(router.prompt_blocks(kPrefill), 20);
  EXPECT_EQ(router.cached_blocks(kPrefill), 6);
  EXPECT_EQ(router.prompt_blocks(kDecode), 0);
  // What each worker is known to hold: p0 A, D, E (4 + 1 + 4 new blocks), p1 B and C (4 + 1).
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "p0"), 9);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "p1"), 5);
}

TEST(KvRouterTest, AHigherWeightFavoursTheHitOverTheLoad) {
  for (const auto& [weight, want] : {std::pair<double, std::string>{1.0, "p1"}, {3.0, "p0"}}) {
    SCOPED_TRACE(weight);
    std::unique_ptr<WorkerPool> pool = TwoOfEach();
    KvRouter router({RoutingMode::kKvAware, weight, 1000});
    EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(5, 3, 6, 4)).worker, "p0");  // a tie: the first
    EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(1, 3, 2, 4)).worker, "p1");  // w4 + 4 against w4
    EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(7, 0, 7, 8)).worker, "p0");  // w8 + 4 both ways
    // p0 holds 3 of its 4 blocks under 12 in flight, p1 none under 4:
    // weight 1: 1 + 12 against 4 + 4; weight 3: 3 + 12 against 12 + 4.
    EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(5, 3, 9, 4)).worker, want);
  }
}

TEST(KvRouterTest, LeastLoadedAndRoundRobinIgnoreThePrefixButCountItsHits) {
  std::unique_ptr<WorkerPool> pool = TwoOfEach();
  KvRouter least({RoutingMode::kLeastLoaded, 1.0, 1000});
  EXPECT_EQ(Route(*pool, least, kPrefill, Prompt(1, 3, 2, 4)).worker, "p0");
  EXPECT_EQ(Route(*pool, least, kPrefill, Prompt(5, 3, 6, 4)).worker, "p1");
  // C shares B's prefix, but both have one request in flight: the first.
  EXPECT_EQ(Route(*pool, least, kPrefill, Prompt(5, 3, 7, 4)).worker, "p0");
  // D too: p1 has fewer in flight, and happens to hold its prefix.
  EXPECT_EQ(Route(*pool, least, kPrefill, Prompt(5, 3, 8, 4)).worker, "p1");
  EXPECT_EQ(least.cached_blocks(kPrefill), 3);
  EXPECT_EQ(least.prompt_blocks(kPrefill), 16);

  std::unique_ptr<WorkerPool> pool2 = TwoOfEach();
  KvRouter rr({RoutingMode::kRoundRobin, 1.0, 1000});
  std::vector<std::string> got;
  for (int i = 0; i < 4; ++i) got.push_back(Route(*pool2, rr, kDecode, Prompt(1, 4, 1, 4)).worker);
  EXPECT_EQ(got, (std::vector<std::string>{"d0", "d1", "d0", "d1"}));
  // The third and fourth found the whole prompt on their worker.
  EXPECT_EQ(rr.cached_blocks(kDecode), 8);
  EXPECT_EQ(rr.prompt_blocks(kDecode), 16);
  // Each role goes round its own workers, a request's Admit and Prefill
  // choices interleaved (one shared turn would give each role one worker).
  std::vector<std::string> decode, prefill;
  for (int i = 0; i < 4; ++i) {
    decode.push_back(Route(*pool2, rr, kDecode, Prompt(2, 0, 2 + i, 4)).worker);
    prefill.push_back(Route(*pool2, rr, kPrefill, Prompt(2, 0, 2 + i, 4)).worker);
  }
  EXPECT_EQ(decode, (std::vector<std::string>{"d0", "d1", "d0", "d1"}));
  EXPECT_EQ(prefill, (std::vector<std::string>{"p0", "p1", "p0", "p1"}));
}

TEST(KvRouterTest, AChoicesLoadStaysOnItsWorkerUntilDone) {
  std::unique_ptr<WorkerPool> pool = TwoOfEach();
  KvRouter router;
  WorkerHandle a, d;
  EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(1, 0, 1, 5), &a).load_blocks, 5);  // all to compute
  EXPECT_EQ(Route(*pool, router, kDecode, Prompt(1, 0, 1, 5), &d).load_blocks, 5);   // all to hold
  // A second prefill of the same prompt computes nothing new on p0 (the
  // engine still runs its last token); the decode side holds it all again.
  WorkerHandle a2;
  EXPECT_EQ(Route(*pool, router, kPrefill, Prompt(1, 0, 1, 5), &a2).load_blocks, 0);
  auto loads = [&pool](v1::WorkerRole role) {
    std::vector<int64_t> blocks;
    absl::StatusOr<WorkerHandle> peek =
        pool->Acquire(role, {}, [&blocks](const std::vector<WorkerPool::Candidate>& c) {
          for (const WorkerPool::Candidate& x : c) blocks.push_back(x.in_flight_blocks);
          return WorkerPool::Choice{};
        });
    EXPECT_TRUE(peek.ok());
    if (peek.ok()) pool->Done(role, *peek);
    return blocks;
  };
  EXPECT_EQ(loads(kPrefill), (std::vector<int64_t>{5, 0}));
  EXPECT_EQ(loads(kDecode), (std::vector<int64_t>{5, 0}));
  pool->Done(kPrefill, a);
  pool->Done(kPrefill, a2);
  pool->Done(kDecode, d);
  EXPECT_EQ(loads(kPrefill), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(loads(kDecode), (std::vector<int64_t>{0, 0}));
}

TEST(KvRouterTest, PromptsAreHashedAtEachWorkersOwnBlockSize) {
  WorkerPool pool;
  pool.Add(kPrefill, "p32", "127.0.0.1:1", /*registered=*/true, /*draining=*/false, "inc", /*kv_block_size=*/32);
  KvRouter router;
  // 80 tokens: 2 full blocks of 32 and a partial one.
  std::vector<int32_t> prompt = Prompt(1, 5, 1, 5);
  EXPECT_EQ(Route(pool, router, kPrefill, prompt).load_blocks, 3);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "p32"), 2);  // full blocks only
  EXPECT_EQ(Route(pool, router, kPrefill, prompt).load_blocks, 1);
  EXPECT_EQ(router.cached_blocks(kPrefill), 2);
  // The index holds the hashes the worker's own cache keys those blocks by.
  router.Evicted(kPrefill, "p32", ChainedBlockHashes(prompt, 32, 0, 2));
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "p32"), 0);
}

TEST(KvRouterTest, ARestartedWorkersEntriesAreDroppedAndAHeartbeatKeepsThem) {
  WorkerPool pool;
  ClusterOptions options;
  options.lease_renew_interval = std::chrono::milliseconds(0);  // no renewer thread
  ClusterBackend backend(&pool, nullptr, ModelConfig{}, options);
  for (v1::WorkerRole role : {kPrefill, kDecode}) {
    const std::string id = role == kPrefill ? "p" : "d";
    pool.Add(role, id, "127.0.0.1:7", /*registered=*/true, false, "inc-1");
    Route(pool, backend.kv_router(), role, Prompt(1, 4, 1, 4));
    EXPECT_EQ(backend.kv_router().IndexedBlocks(role, id), 4);
    pool.Add(role, id, "127.0.0.1:7", /*registered=*/true, false, "inc-1");  // a heartbeat
    EXPECT_EQ(backend.kv_router().IndexedBlocks(role, id), 4);
    pool.Add(role, id, "127.0.0.1:7", /*registered=*/true, false, "inc-2");  // a new process
    EXPECT_EQ(backend.kv_router().IndexedBlocks(role, id), 0);
  }
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

v1::KvEventBatch Batch(uint64_t first_seq, bool snapshot, std::vector<std::pair<bool, std::vector<uint64_t>>> runs) {
  v1::KvEventBatch b;
  b.set_first_seq(first_seq);
  b.set_snapshot(snapshot);
  for (auto& [evicted, hashes] : runs) {
    v1::KvEventRun* r = b.add_runs();
    r->set_evicted(evicted);
    for (uint64_t h : hashes) r->add_block_hashes(h);
  }
  return b;
}

TEST(KvRouterEventsTest, EventsApplyInOrderOnceAndASnapshotReplacesWhatWasKnown) {
  KvRouter router;
  const std::vector<uint64_t> h = ChainedBlockHashes(Prompt(1, 6, 1, 6), 16, 0, 6);
  // Deltas before any snapshot: nothing to build on.
  EXPECT_EQ(router.ApplyEvents(kPrefill, "w", "inc-1", Batch(1, false, {{false, {h[0]}}})), 0u);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "w"), 0);
  EXPECT_EQ(router.ApplyEvents(kPrefill, "w", "inc-1", Batch(3, true, {{false, {h[0], h[1], h[2]}}})), 3u);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "w"), 3);
  // Changes 4..6: two stored, one evicted.
  EXPECT_EQ(router.ApplyEvents(kPrefill, "w", "inc-1", Batch(4, false, {{false, {h[3], h[4]}}, {true, {h[1]}}})),
            6u);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "w"), 4);
  // The same batch again (its answer was lost): nothing changes; a batch
  // overlapping the applied ones applies only what is new (7: h[1] again).
  EXPECT_EQ(router.ApplyEvents(kPrefill, "w", "inc-1", Batch(4, false, {{false, {h[3], h[4]}}, {true, {h[1]}}})),
            6u);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "w"), 4);
  EXPECT_EQ(router.ApplyEvents(kPrefill, "w", "inc-1", Batch(6, false, {{true, {h[1]}}, {false, {h[1]}}})), 7u);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "w"), 5);
  // A gap (8 missing): nothing applied; the worker resends from 8.
  EXPECT_EQ(router.ApplyEvents(kPrefill, "w", "inc-1", Batch(9, false, {{false, {h[5]}}})), 7u);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "w"), 5);
  // A snapshot replaces everything (the prompt's chain now held from h[0] to h[1] only).
  EXPECT_EQ(router.ApplyEvents(kPrefill, "w", "inc-1", Batch(20, true, {{false, {h[0], h[1]}}})), 20u);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "w"), 2);
  // Another process under the id: the old one's blocks are forgotten, and
  // its deltas need a snapshot first.
  EXPECT_EQ(router.ApplyEvents(kPrefill, "w", "inc-2", Batch(21, false, {{false, {h[2]}}})), 0u);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "w"), 0);
  // The roles' indexes are apart.
  EXPECT_EQ(router.ApplyEvents(kDecode, "w", "inc-9", Batch(1, true, {{false, {h[0]}}})), 1u);
  EXPECT_EQ(router.IndexedBlocks(kDecode, "w"), 1);
  EXPECT_EQ(router.IndexedBlocks(kPrefill, "w"), 0);
}

TEST(KvRouterEventsTest, AWorkersEventsSteerTheChoice) {
  std::unique_ptr<WorkerPool> pool = TwoOfEach();
  KvRouter router;
  const std::vector<int32_t> prompt = Prompt(3, 4, 3, 4);
  const std::vector<uint64_t> h = ChainedBlockHashes(prompt, 16, 0, 4);
  // p1 says it holds the prompt's blocks: the prompt goes there.
  router.ApplyEvents(kPrefill, "p1", "", Batch(4, true, {{false, h}}));
  EXPECT_EQ(Route(*pool, router, kPrefill, prompt).worker, "p1");
  EXPECT_EQ(router.cached_blocks(kPrefill), 4);
}

}  // namespace
}  // namespace tandem
