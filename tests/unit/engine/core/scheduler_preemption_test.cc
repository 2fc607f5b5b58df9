// Scheduler: preemption when a running sequence needs a block (the newest
// goes, possibly itself; recomputation reuses the prefix cache; a
// recomputation longer than the budget is readmitted with chunked prefill
// off) and the priority queue policy (admission order, victims by priority
// then age, aging).
// Harness (Sim, PlanOf, Config): scheduler_test_util.h.

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/kv_cache_manager.h"
#include "engine/core/scheduler.h"
#include "engine/core/scheduler_config.h"
#include "engine/core/sequence.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/scheduler_test_util.h"

namespace tandem {
namespace {

using namespace scheduler_test;  // NOLINT(build/namespaces): the shared helpers

// ---------------------------------------------------------------------------
// Preemption.

TEST(SchedulerTest, PreemptsNewestRunningAndRecomputesFromPrefixCache) {
  Sim sim(Config(100), 4);
  Sequence* a = sim.Add("A", 8, 3);
  Sequence* b = sim.Add("B", 6, 3);

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 8}, {"B", 6}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(sim.Table(b), (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 0);
  Sequence* c = sim.Add("C", 3, 1);  // fits one block; arrives after B

  // A's 9th token needs a block: B (newest) is preempted, its blocks are
  // freed tail-first ([3, 2]) and A takes block 3. No admission this step,
  // though C would fit block 2.
  SchedulerOutput out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 1}}));
  EXPECT_EQ(PreemptedOf(out), (Names{"B"}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 3}));
  EXPECT_FALSE(sim.kv.Contains(b->id));
  EXPECT_FALSE(sim.kv.Contains(c->id));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 1);
  EXPECT_EQ(b->status, SequenceStatus::kWaiting);
  EXPECT_EQ(b->num_computed_tokens, 0);
  EXPECT_EQ(b->num_preemptions, 1);
  EXPECT_EQ(b->num_tokens(), 7);  // prompt + its one output, all to recompute
  EXPECT_EQ(sim.sched.num_preemptions(), 1);
  EXPECT_EQ(sim.sched.num_running(), 1);
  EXPECT_EQ(sim.sched.num_waiting(), 2);

  // B's first block is still cached (free, not evicted).
  CachedPrefix prefix = sim.kv.FindCachedPrefix(b->tokens);
  EXPECT_EQ(prefix.blocks, (std::vector<BlockId>{BlockId(2)}));
  EXPECT_EQ(prefix.num_cached_tokens, 4);

  // B heads the queue but needs 2 free blocks (cached block 2 + one new) and
  // only 1 is free; C does not overtake it.
  out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 1}}));
  EXPECT_TRUE(out.preempted.empty());
  EXPECT_TRUE(a->finished());
  EXPECT_FALSE(sim.kv.Contains(c->id));
  EXPECT_EQ(sim.kv.pool().FreeQueue(), (std::vector<BlockId>{BlockId(2), BlockId(3), BlockId(1), BlockId(0)}));

  // B is readmitted from its cached block and recomputes only 3 tokens.
  out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"B", 3}, {"C", 3}}));
  EXPECT_EQ(sim.Table(b), (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(sim.StepTable(c), (std::vector<int32_t>{1}));
  EXPECT_EQ(b->num_computed_tokens, 7);
  EXPECT_EQ(b->num_output_tokens(), 2);
  EXPECT_TRUE(c->finished());

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 1}}));
  EXPECT_TRUE(b->finished());
  EXPECT_EQ(b->num_preemptions, 1);
  EXPECT_EQ(sim.sched.num_preemptions(), 1);
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, NewestSequenceNeedingABlockPreemptsItself) {
  Sim sim(Config(100), 5);
  Sequence* a = sim.Add("A", 8, 3);
  Sequence* b = sim.Add("B", 8, 2);

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 8}, {"B", 8}}));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 1);

  // A takes the last block; B needs one too, is itself the newest and gives up.
  SchedulerOutput out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 1}}));
  EXPECT_EQ(PreemptedOf(out), (Names{"B"}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 4}));
  EXPECT_FALSE(sim.kv.Contains(b->id));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 2);
  EXPECT_EQ(b->num_computed_tokens, 0);
  EXPECT_EQ(b->num_preemptions, 1);
  EXPECT_EQ(b->status, SequenceStatus::kWaiting);

  // B's two prompt blocks are still cached; its recompute needs 3 blocks
  // (9 tokens), of which 2 are free: it waits while A runs.
  CachedPrefix prefix = sim.kv.FindCachedPrefix(b->tokens);
  EXPECT_EQ(prefix.blocks, (std::vector<BlockId>{BlockId(2), BlockId(3)}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}}));
  EXPECT_TRUE(a->finished());

  // Readmitted: 8 tokens from the cache, the one output recomputed.
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 1}}));
  EXPECT_EQ(sim.StepTable(b), (std::vector<int32_t>{2, 3, 4}));
  EXPECT_TRUE(b->finished());
  sim.ReleaseAllAndCheck();
}

// ---------------------------------------------------------------------------
// Bug: a preempted sequence whose recomputation exceeds the token budget can
// never be readmitted when chunked prefill is off.
//
// LlmEngine::ValidateRequest accepts both requests below (prompt 8 <= budget
// 10; prompt + max_tokens = 24 tokens = 6 blocks fits the pool). B is
// preempted holding 12 tokens; with chunking off AdmitWaiting only admits it
// when all 12 fit one step's budget (10), which never happens, and as the
// FCFS head it also blocks everyone behind it: the engine spins on empty
// steps forever.

TEST(SchedulerTest, UnchunkedRecomputeLongerThanBudgetIsReadmitted) {
  SchedulerConfig config = Config(10);
  config.enable_chunked_prefill = false;
  Sim sim(config, 6);
  Sequence* a = sim.Add("A", 8, 16);
  Sequence* b = sim.Add("B", 8, 16);

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 8}}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 8}}));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 1}}));
  SchedulerOutput out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 1}}));
  EXPECT_EQ(PreemptedOf(out), (Names{"B"}));
  EXPECT_EQ(b->num_tokens(), 12);

  while (!a->finished() && sim.step() < 40) sim.Step();
  ASSERT_TRUE(a->finished());
  // The pool is empty and nothing runs: B must make progress now.
  out = sim.Step();
  EXPECT_FALSE(out.scheduled.empty()) << "B (12 tokens to recompute, budget 10) is stuck in the queue";
  for (int i = 0; i < 30 && !b->finished(); ++i) sim.Step();
  EXPECT_TRUE(b->finished());
  sim.ReleaseAllAndCheck();
}

// ---------------------------------------------------------------------------
// Priority policy.

SchedulerConfig PriorityConfig(int64_t budget) {
  SchedulerConfig c = Config(budget);
  c.queue_policy = QueuePolicy::kPriority;
  return c;
}

TEST(SchedulerTest, PriorityAdmitsLowerValueFirstTiesByArrival) {
  SchedulerConfig config = PriorityConfig(100);
  config.max_num_seqs = 2;
  Sim sim(config, 12);
  sim.Add("A", 4, 1, /*priority=*/2);
  sim.Add("B", 4, 1, /*priority=*/0);
  sim.Add("C", 4, 1, /*priority=*/1);
  sim.Add("D", 4, 1, /*priority=*/0);

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 4}, {"D", 4}}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"C", 4}, {"A", 4}}));
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, PriorityVictimAlreadyScheduledGivesTokensBack) {
  Sim sim(PriorityConfig(100), 4);
  Sequence* v = sim.Add("V", 6, 10, /*priority=*/5);
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"V", 6}}));
  Sequence* s = sim.Add("S", 8, 10, /*priority=*/0);
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"V", 1}, {"S", 8}}));
  EXPECT_EQ(sim.Table(v), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(sim.Table(s), (std::vector<int32_t>{2, 3}));

  // V is planned first (it fits its block); then S needs a block and the
  // victim is V, the lowest priority, though older: V leaves the plan.
  SchedulerOutput out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"S", 1}}));
  EXPECT_EQ(out.num_batched_tokens, 1);
  EXPECT_EQ(PreemptedOf(out), (Names{"V"}));
  EXPECT_EQ(sim.Table(s), (std::vector<int32_t>{2, 3, 1}));
  EXPECT_FALSE(sim.kv.Contains(v->id));
  EXPECT_EQ(v->num_computed_tokens, 0);
  EXPECT_EQ(v->num_preemptions, 1);
  EXPECT_EQ(v->num_tokens(), 8);  // 6 prompt + 2 outputs: no token for V this step
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 1);
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, PriorityVictimIsLowestPriorityThenNewest) {
  Sim sim(PriorityConfig(100), 3);
  Sequence* x = sim.Add("X", 4, 5, /*priority=*/3);
  Sequence* y = sim.Add("Y", 4, 5, /*priority=*/3);
  Sequence* z = sim.Add("Z", 4, 5, /*priority=*/0);

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"Z", 4}, {"X", 4}, {"Y", 4}}));
  EXPECT_EQ(sim.Table(z), (std::vector<int32_t>{0}));
  EXPECT_EQ(sim.Table(x), (std::vector<int32_t>{1}));
  EXPECT_EQ(sim.Table(y), (std::vector<int32_t>{2}));

  // Z needs a block: Y (priority 3, newer than X) goes, not Z (newest of all).
  // Then X needs a block and is itself the lowest priority left.
  SchedulerOutput out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"Z", 1}}));
  EXPECT_EQ(PreemptedOf(out), (Names{"Y", "X"}));
  EXPECT_EQ(sim.Table(z), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 1);
  EXPECT_EQ(sim.sched.num_preemptions(), 2);
  EXPECT_EQ(sim.sched.num_waiting(), 2);
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, PriorityAgingLetsLowPriorityOvertakeNewArrivals) {
  SchedulerConfig config = PriorityConfig(100);
  config.max_num_seqs = 1;
  config.priority_aging_steps = 2;
  Sim sim(config, 12);
  Sequence* low = sim.Add("L", 4, 1, /*priority=*/2);

  // A new priority-0 request arrives before every step. L's effective
  // priority is 2 - waiting_steps / 2: 2, 2, 1, 1, then 0 at its fifth step,
  // where it wins the tie with H4 by arrival.
  Names admitted;
  for (int i = 0; i < 7; ++i) {
    sim.Add(absl::StrCat("H", i), 4, 1, /*priority=*/0);
    const SchedulerOutput out = sim.Step();
    ASSERT_EQ(out.scheduled.size(), 1u) << "step " << sim.step();
    admitted.push_back(out.scheduled[0].seq->request_id);
  }
  EXPECT_EQ(admitted, (Names{"H0", "H1", "H2", "H3", "L", "H4", "H5"}));
  EXPECT_TRUE(low->finished());
  EXPECT_EQ(low->waiting_steps, 4);
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, PriorityWithoutAgingLowPriorityKeepsWaiting) {
  // Control for the aging test: with aging effectively off, L keeps losing.
  SchedulerConfig config = PriorityConfig(100);
  config.max_num_seqs = 1;
  config.priority_aging_steps = 1000;
  Sim sim(config, 12);
  Sequence* low = sim.Add("L", 4, 1, /*priority=*/2);
  for (int i = 0; i < 7; ++i) {
    sim.Add(absl::StrCat("H", i), 4, 1, /*priority=*/0);
    EXPECT_EQ(PlanOf(sim.Step()), (Plan{{absl::StrCat("H", i), 4}}));
  }
  EXPECT_EQ(low->status, SequenceStatus::kWaiting);
  EXPECT_EQ(low->waiting_steps, 7);
  sim.ReleaseAllAndCheck();
}

}  // namespace
}  // namespace tandem
