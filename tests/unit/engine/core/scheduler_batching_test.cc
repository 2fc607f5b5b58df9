// Scheduler: the batching ladder (none, static, dynamic, continuous, paged),
// Remove() of waiting and running sequences, FitsPool, and SchedulerConfig
// (batching strategy names, Validate messages).
// Harness (Sim, PlanOf, Config): scheduler_test_util.h.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/core/scheduler.h"
#include "engine/core/scheduler_config.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/scheduler_test_util.h"

namespace tandem {
namespace {

using namespace scheduler_test;  // NOLINT(build/namespaces): the shared helpers

// ---------------------------------------------------------------------------
// The batching ladder.

SchedulerConfig Ladder(BatchingStrategy s, int64_t budget = 100) {
  SchedulerConfig c = Config(budget);
  c.batching = s;
  return c;
}

TEST(SchedulerTest, NoneRunsOneRequestAtATime) {
  Sim sim(Ladder(BatchingStrategy::kNone), 12);
  Sequence* a = sim.Add("A", 4, 2);
  Sequence* b = sim.Add("B", 4, 2);

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 4}}));
  EXPECT_FALSE(sim.kv.Contains(b->id));  // blocks and budget to spare, still waits
  EXPECT_EQ(sim.sched.reserved_blocks(), 1);  // A: 2 blocks for 6 tokens, 1 held
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}}));
  EXPECT_TRUE(a->finished());
  EXPECT_FALSE(sim.kv.Contains(b->id));  // A was running at admission time
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 4}}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 1}}));
  EXPECT_TRUE(b->finished());
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, StaticBatchRunsUntilEveryMemberFinishes) {
  SchedulerConfig config = Ladder(BatchingStrategy::kStatic);
  config.batch_size = 2;
  Sim sim(config, 12);
  Sequence* a = sim.Add("A", 4, 2);
  Sequence* b = sim.Add("B", 4, 3);
  Sequence* c = sim.Add("C", 4, 1);

  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 4}, {"B", 4}}));
  EXPECT_EQ(sim.sched.num_waiting(), 1);
  Sequence* d = sim.Add("D", 4, 1);  // arrives while the batch runs
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 1}}));
  EXPECT_TRUE(a->finished());
  // A slot is free, but the batch is not done.
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 1}}));
  EXPECT_TRUE(b->finished());
  EXPECT_FALSE(sim.kv.Contains(c->id));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"C", 4}, {"D", 4}}));
  EXPECT_TRUE(c->finished());
  EXPECT_TRUE(d->finished());
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, StaticBatchJoinsWholeEvenWhenBudgetIsSpent) {
  SchedulerConfig config = Ladder(BatchingStrategy::kStatic, /*budget=*/4);
  config.batch_size = 2;
  Sim sim(config, 12);
  Sequence* a = sim.Add("A", 4, 2);
  Sequence* b = sim.Add("B", 4, 2);

  // B joins the batch with no token this step (registered, no blocks yet).
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 4}}));
  EXPECT_EQ(sim.sched.num_running(), 2);
  EXPECT_TRUE(sim.kv.Contains(b->id));
  EXPECT_TRUE(sim.Table(b).empty());
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 3}}));
  EXPECT_TRUE(a->finished());
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 1}}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"B", 1}}));
  EXPECT_TRUE(b->finished());
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, DynamicBatchWaitsForFullBatchOrDelay) {
  SchedulerConfig config = Ladder(BatchingStrategy::kDynamic);
  config.batch_size = 3;
  config.max_batch_delay_ms = 10;
  Sim sim(config, 12);

  sim.now_ms = 0;
  sim.Add("A", 4, 1);
  EXPECT_TRUE(sim.Step().scheduled.empty());  // 1 of 3, waited 0 ms
  sim.now_ms = 5;
  sim.Add("B", 4, 1);
  EXPECT_TRUE(sim.Step().scheduled.empty());  // 2 of 3, A waited 5 ms
  sim.now_ms = 9;
  EXPECT_TRUE(sim.Step().scheduled.empty());  // A waited 9 ms
  EXPECT_EQ(sim.sched.num_waiting(), 2);
  sim.now_ms = 10;
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 4}, {"B", 4}}));  // delay reached

  // A full batch goes at once, without waiting for the delay.
  sim.now_ms = 20;
  sim.Add("C", 4, 1);
  sim.Add("D", 4, 1);
  sim.Add("E", 4, 1);
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"C", 4}, {"D", 4}, {"E", 4}}));
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, ContinuousReservesFullContextAndNeverPreempts) {
  Sim sim(Ladder(BatchingStrategy::kContinuous), 8);
  Sequence* a = sim.Add("A", 8, 8);   // reserves 4 blocks (16 tokens)
  Sequence* b = sim.Add("B", 8, 12);  // needs 5 (20 tokens); its prompt alone needs 2
  Sequence* c = sim.Add("C", 4, 4);   // needs 2, behind B

  SchedulerOutput out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"A", 8}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 6);
  EXPECT_EQ(sim.sched.reserved_blocks(), 2);  // 6 free - 2 reserved = 4 < 5 for B
  EXPECT_FALSE(sim.kv.Contains(b->id));
  EXPECT_FALSE(sim.kv.Contains(c->id));

  // A decodes to the end; B and C wait the whole time; nothing is preempted.
  for (int i = 0; i < 7; ++i) {
    out = sim.Step();
    EXPECT_EQ(PlanOf(out), (Plan{{"A", 1}})) << "step " << sim.step();
    EXPECT_TRUE(out.preempted.empty());
    if (i == 0) {
      EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 2}));
      EXPECT_EQ(sim.sched.reserved_blocks(), 1);
    }
  }
  EXPECT_TRUE(a->finished());
  EXPECT_EQ(sim.sched.reserved_blocks(), 0);

  // Free queue [4, 5, 6, 7, 3, 2, 1, 0]: B reserves 5 (holds 2), C reserves 2.
  out = sim.Step();
  EXPECT_EQ(PlanOf(out), (Plan{{"B", 8}, {"C", 4}}));
  EXPECT_EQ(sim.Table(b), (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(sim.Table(c), (std::vector<int32_t>{6}));
  EXPECT_EQ(sim.sched.reserved_blocks(), 4);
  while (sim.sched.num_running() + sim.sched.num_waiting() > 0 && sim.step() < 50) {
    EXPECT_TRUE(sim.Step().preempted.empty());
  }
  EXPECT_TRUE(b->finished());
  EXPECT_TRUE(c->finished());
  EXPECT_EQ(sim.sched.num_preemptions(), 0);
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, PagedGrowsOnDemand) {
  Sim sim(Ladder(BatchingStrategy::kPaged), 8);
  Sequence* a = sim.Add("A", 8, 8);
  Sequence* b = sim.Add("B", 8, 12);
  Sequence* c = sim.Add("C", 4, 4);

  // Same requests as above: all three join at once, holding prompt blocks only.
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 8}, {"B", 8}, {"C", 4}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(sim.Table(b), (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(sim.Table(c), (std::vector<int32_t>{4}));
  EXPECT_EQ(sim.sched.reserved_blocks(), 0);
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 3);

  // Each sequence gets a block the step its next token crosses a boundary.
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 1}, {"C", 1}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 5}));
  EXPECT_EQ(sim.Table(b), (std::vector<int32_t>{2, 3, 6}));
  EXPECT_EQ(sim.Table(c), (std::vector<int32_t>{4, 7}));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 0);
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 1}, {"C", 1}}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 1}, {"C", 1}}));
  EXPECT_TRUE(c->finished());  // frees 7, 4
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 1}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 5}));
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 1}, {"B", 1}}));
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0, 1, 5, 7}));
  EXPECT_EQ(sim.Table(b), (std::vector<int32_t>{2, 3, 6, 4}));
  EXPECT_EQ(sim.sched.num_preemptions(), 0);
  sim.ReleaseAllAndCheck();
}

// ---------------------------------------------------------------------------
// Remove().

TEST(SchedulerTest, RemoveForgetsWaitingAndRunningSequences) {
  SchedulerConfig config = Ladder(BatchingStrategy::kContinuous);
  config.max_num_seqs = 1;
  Sim sim(config, 8);
  Sequence* a = sim.Add("A", 4, 4);
  Sequence* b = sim.Add("B", 4, 4);
  EXPECT_EQ(PlanOf(sim.Step()), (Plan{{"A", 4}}));
  EXPECT_EQ(sim.sched.reserved_blocks(), 1);

  sim.sched.Remove(b);  // waiting: never admitted
  EXPECT_EQ(sim.sched.num_waiting(), 0);
  EXPECT_FALSE(sim.kv.Contains(b->id));

  sim.sched.Remove(a);  // running: blocks stay until the caller frees them
  EXPECT_EQ(sim.sched.num_running(), 0);
  EXPECT_EQ(sim.sched.reserved_blocks(), 0);
  EXPECT_EQ(sim.Table(a), (std::vector<int32_t>{0}));
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 7);
  EXPECT_TRUE(sim.kv.Free(a->id).ok());
  EXPECT_EQ(sim.kv.NumFreeBlocks(), 8);

  const SchedulerOutput out = sim.Step();
  EXPECT_TRUE(out.scheduled.empty());
  EXPECT_TRUE(out.preempted.empty());
  sim.ReleaseAllAndCheck();
}

TEST(SchedulerTest, FitsPool) {
  Sim sim(Config(100), 8);
  EXPECT_TRUE(sim.sched.FitsPool(32));
  EXPECT_FALSE(sim.sched.FitsPool(33));
  sim.ReleaseAllAndCheck();
}

// ---------------------------------------------------------------------------
// SchedulerConfig.

TEST(SchedulerConfigTest, BatchingStrategyNamesRoundTrip) {
  for (BatchingStrategy s : {BatchingStrategy::kNone, BatchingStrategy::kStatic, BatchingStrategy::kDynamic,
                             BatchingStrategy::kContinuous, BatchingStrategy::kPaged}) {
    const absl::StatusOr<BatchingStrategy> parsed = ParseBatchingStrategy(BatchingStrategyName(s));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_EQ(BatchingStrategyName(BatchingStrategy::kNone), "none");
  EXPECT_EQ(BatchingStrategyName(BatchingStrategy::kStatic), "static");
  EXPECT_EQ(BatchingStrategyName(BatchingStrategy::kDynamic), "dynamic");
  EXPECT_EQ(BatchingStrategyName(BatchingStrategy::kContinuous), "continuous");
  EXPECT_EQ(BatchingStrategyName(BatchingStrategy::kPaged), "paged");
}

TEST(SchedulerConfigTest, UnknownBatchingStrategyIsInvalidArgument) {
  const absl::StatusOr<BatchingStrategy> parsed = ParseBatchingStrategy("vllm");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed.status().message(),
            "batching 'vllm': must be one of none, static, dynamic, continuous, paged");
  EXPECT_FALSE(ParseBatchingStrategy("Paged").ok());  // case-sensitive
  EXPECT_FALSE(ParseBatchingStrategy("").ok());
}

TEST(SchedulerConfigTest, ValidateNamesTheField) {
  EXPECT_TRUE(SchedulerConfig{}.Validate().ok());
  struct Case {
    void (*mutate)(SchedulerConfig&);
    const char* message;
  };
  const Case cases[] = {
      {[](SchedulerConfig& c) { c.max_num_batched_tokens = 0; }, "max_num_batched_tokens = 0: must be >= 1"},
      {[](SchedulerConfig& c) { c.max_num_seqs = 0; }, "max_num_seqs = 0: must be >= 1"},
      {[](SchedulerConfig& c) { c.batch_size = -1; }, "batch_size = -1: must be >= 1"},
      {[](SchedulerConfig& c) { c.max_batch_delay_ms = -1; }, "max_batch_delay_ms = -1: must be >= 0"},
      {[](SchedulerConfig& c) { c.priority_aging_steps = 0; }, "priority_aging_steps = 0: must be >= 1"},
  };
  for (const Case& k : cases) {
    SchedulerConfig c;
    k.mutate(c);
    const absl::Status st = c.Validate();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << k.message;
    EXPECT_EQ(st.message(), k.message);
  }
  SchedulerConfig zero_delay;
  zero_delay.max_batch_delay_ms = 0;  // dynamic without waiting is allowed
  EXPECT_TRUE(zero_delay.Validate().ok());
}

}  // namespace
}  // namespace tandem
