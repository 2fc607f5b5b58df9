// Scheduler: the per-step token budget and chunked prefill (running
// sequences first, decodes before new prefill chunks), prompts that are not
// split when chunked prefill is off, the max_num_seqs cap, and admission only
// when a prompt's blocks fit, keeping FCFS head of line.
// Harness (Sim, PlanOf, Config): scheduler_test_util.h.

#include <cstdint>
#include <vector>

#include "engine/core/scheduler.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/scheduler_test_util.h"

namespace tandem {
namespace {

using namespace scheduler_test;  // NOLINT(build/namespaces): the shared helpers

// ---------------------------------------------------------------------------
// Token budget and chunked prefill.

TEST(SchedulerTest, ChunksLongPromptUnderTokenBudget) {
  Sim sim(Config(7), 12);
  Sequence* a = sim.Add("A", 20, 3);

  SchedulerOutput out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 7}}));
  EXPECT_EQ(out.num_batched_tokens, 7);
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(a->num_computed_tokens, 7);
  EXPECT_EQ(a->num_output_tokens(), 0);

  out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 7}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(a->num_computed_tokens, 14);

  out = sim.Step();  // the last chunk completes the prompt and samples
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 6}}));
  EXPECT_EQ(out.num_batched_tokens, 6);
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(a->num_computed_tokens, 20);
  EXPECT_EQ(a->num_output_tokens(), 1);
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 7);

  out = sim.Step();  // decode: token 21 opens block 5
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 1}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 6);

  out = sim.Step();  // third output: finished and released
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 1}}));
  EXPECT_TRUE(a->finished());
  EXPECT_EQ(sim.sched.num_running(), 0);
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 12);

  out = sim.Step();
  EXPECT_TRUE(out.scheduled.empty());
  EXPECT_EQ(out.num_batched_tokens, 0);
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, SharesBudgetRunningFirst) {
  Sim sim(Config(7), 12);
  Sequence* a = sim.Add("A", 10, 2);
  Sequence* b = sim.Add("B", 6, 2);

  // A takes the whole budget; B cannot get a single token and waits.
  SchedulerOutput out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 7}}));
  EXPECT_EQ(sim.sched.num_running(), 1);
  EXPECT_EQ(sim.sched.num_waiting(), 1);
  EXPECT_FALSE(sim.kv.Contains(b->id));

  // A (running) finishes its prompt first; B gets the 4 tokens left.
  out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 3}, {"B", 4}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(sim.Table(b), (std::vector<int32_t>{3}));
  EXPECT_EQ(a->num_output_tokens(), 1);
  EXPECT_EQ(b->num_computed_tokens, 4);

  // A's decode and the rest of B's prompt share a step.
  out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 1}, {"B", 2}}));
  EXPECT_TRUE(a->finished());
  EXPECT_EQ(sim.Table(b), (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(sim.kv.pool().FreeQueue(),
            (std::vector<BlockId>{BlockId(5), BlockId(6), BlockId(7), BlockId(8), BlockId(9), BlockId(10),
                                  BlockId(11), BlockId(2), BlockId(1), BlockId(0)}));

  out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"B", 1}}));
  EXPECT_TRUE(b->finished());
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, DecodesScheduledBeforeNewPrefillChunks) {
  Sim sim(Config(7), 12);
  Sequence* a = sim.Add("A", 4, 5);
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 4}}));

  Sequence* c = sim.Add("C", 12, 2);
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"C", 6}}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"C", 6}}));
  EXPECT_EQ(c->num_output_tokens(), 1);
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"C", 1}}));
  EXPECT_TRUE(c->finished());
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}}));
  EXPECT_TRUE(a->finished());
  sim.ReleaseAllAndCheck();
}

// ---------------------------------------------------------------------------
// enable_chunked_prefill = false.

TEST(SchedulerTest, UnchunkedPromptWaitsForWholeBudget) {
  SchedulerConfig config = Config(7);
  config.enable_chunked_prefill = false;
  Sim sim(config, 12);
  Sequence* a = sim.Add("A", 5, 3);
  Sequence* b = sim.Add("B", 6, 3);
  Sequence* c = sim.Add("C", 2, 3);

  // B (6) does not fit the 2 tokens left and is not split; C (2) would fit
  // but does not overtake B (head of line).
  SchedulerOutput out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 5}}));
  EXPECT_EQ(sim.sched.num_waiting(), 2);
  EXPECT_FALSE(sim.kv.Contains(b->id));
  EXPECT_FALSE(sim.kv.Contains(c->id));

  // A's decode leaves exactly 6: B's whole prompt; C finds no budget left.
  out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 1}, {"B", 6}}));
  EXPECT_EQ(out.num_batched_tokens, 7);
  EXPECT_FALSE(sim.kv.Contains(c->id));

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 1}, {"C", 2}}));
  EXPECT_TRUE(a->finished());
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 1}, {"C", 1}}));
  EXPECT_TRUE(b->finished());
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"C", 1}}));
  EXPECT_TRUE(c->finished());
  sim.ReleaseAllAndCheck();
}

// ---------------------------------------------------------------------------
// max_num_seqs.

TEST(SchedulerTest, RespectsMaxNumSeqs) {
  SchedulerConfig config = Config(100);
  config.max_num_seqs = 2;
  Sim sim(config, 12);
  sim.Add("A", 4, 2);
  sim.Add("B", 4, 2);
  Sequence* c = sim.Add("C", 4, 2);

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 4}, {"B", 4}}));
  EXPECT_EQ(sim.sched.num_running(), 2);
  EXPECT_EQ(sim.sched.num_waiting(), 1);
  // A and B finish in this step, but admission ran while both were running.
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 1}}));
  EXPECT_EQ(sim.sched.num_running(), 0);
  EXPECT_FALSE(sim.kv.Contains(c->id));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"C", 4}}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"C", 1}}));
  EXPECT_TRUE(c->finished());
  sim.ReleaseAllAndCheck();
}

// ---------------------------------------------------------------------------
// Admission needs blocks; FCFS head of line.

TEST(SchedulerTest, AdmitsOnlyWhenBlocksFitAndKeepsHeadOfLine) {
  Sim sim(Config(100), 6);
  Sequence* a = sim.Add("A", 12, 4);  // 3 blocks, grows to 4
  Sequence* b = sim.Add("B", 16, 1);  // 4 blocks
  Sequence* c = sim.Add("C", 4, 1);   // 1 block: would fit, but is behind B

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 12}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 3);
  EXPECT_EQ(sim.sched.num_waiting(), 2);
  EXPECT_FALSE(sim.kv.Contains(b->id));
  EXPECT_FALSE(sim.kv.Contains(c->id));

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 2);
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}}));
  EXPECT_TRUE(a->finished());
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 6);
  EXPECT_FALSE(sim.kv.Contains(c->id));

  // Free queue [4, 5, 3, 2, 1, 0] (A freed tail-first): B takes four, C one.
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 16}, {"C", 4}}));
  EXPECT_EQ(sim.StepTable(b), (std::vector<int32_t>{4, 5, 3, 2}));
  EXPECT_EQ(sim.StepTable(c), (std::vector<int32_t>{1}));
  EXPECT_TRUE(b->finished());
  EXPECT_TRUE(c->finished());
  sim.ReleaseAllAndCheck();
}

}  // namespace
}  // namespace tandem
