// Tests for Scheduler (+ admission policies and SchedulerConfig) in the style
// of vLLM's tests/v1/core: no model, a tiny KV pool (block_size 4), an injected
// fake clock, and exact plans after every step: which sequences, in which
// order, how many tokens each, exact block tables, free counts and preempted
// lists. The test plays the engine's step protocol itself (Sim::Step). Every
// test ends with all sequences released, every block free and the
// KvCacheManager's invariants intact (Sim::ReleaseAllAndCheck).

#include "engine/core/scheduler.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/admission_policy.h"
#include "engine/core/kv_cache_manager.h"
#include "engine/core/scheduler_config.h"
#include "engine/core/sequence.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

constexpr int32_t kBlockSize = 4;

// (request id, num_new_tokens) per scheduled sequence, in batch order.
using Plan = std::vector<std::pair<std::string, int64_t>>;
using Names = std::vector<std::string>;

Plan PlanOf(const SchedulerOutput& out) {
  Plan p;
  for (const ScheduledSequence& s : out.scheduled) p.emplace_back(s.seq->request_id, s.num_new_tokens);
  return p;
}

Names PreemptedOf(const SchedulerOutput& out) {
  Names n;
  for (const Sequence* s : out.preempted) n.push_back(s->request_id);
  return n;
}

// Runs the scheduler against a real KvCacheManager, playing the engine's part:
// commit the scheduled tokens, "sample" a token (1000 + step) for every
// sequence whose context is fully computed, and release a sequence once it has
// max_tokens outputs.
class Sim {
 public:
  Sim(const SchedulerConfig& config, int32_t num_blocks, bool prefix_caching = true)
      : num_blocks_(num_blocks),
        kv(Options(num_blocks, prefix_caching)),
        sched(config, &kv, [this] { return now_ms; }) {}

  // A new sequence named `name` with `prompt_len` distinct prompt tokens
  // (no two sequences share a prompt block, so no accidental prefix hits).
  Sequence* Add(const std::string& name, int32_t prompt_len, uint32_t max_tokens, int32_t priority = 0) {
    const int64_t id = static_cast<int64_t>(seqs_.size());
    std::vector<int32_t> prompt;
    for (int32_t i = 0; i < prompt_len; ++i) prompt.push_back(static_cast<int32_t>((id + 1) * 100 + i));
    SamplingParams params;
    params.max_tokens = max_tokens;
    seqs_.push_back(std::make_unique<Sequence>(SeqId(id), name, std::move(prompt), params, priority,
                                               next_arrival_++, /*fallback_seed=*/1));
    Sequence* seq = seqs_.back().get();
    sched.AddWaiting(seq);
    return seq;
  }

  // One engine step: Schedule() and the step protocol.
  SchedulerOutput Step() {
    ++step_;
    SchedulerOutput out = sched.Schedule();
    int64_t sum = 0;
    std::vector<Sequence*> done;
    for (const ScheduledSequence& s : out.scheduled) {
      sum += s.num_new_tokens;
      Sequence* seq = s.seq;
      seq->num_computed_tokens += s.num_new_tokens;
      const absl::Status st = kv.CommitComputed(seq->id, seq->tokens, seq->num_computed_tokens);
      EXPECT_TRUE(st.ok()) << "step " << step_ << ": " << st;
      if (seq->num_computed_tokens == seq->num_tokens()) {
        seq->tokens.push_back(1000 + step_);
        if (seq->num_output_tokens() >= static_cast<int32_t>(seq->params.max_tokens)) done.push_back(seq);
      }
    }
    EXPECT_EQ(out.num_batched_tokens, sum) << "step " << step_;
    step_tables_.clear();
    for (const ScheduledSequence& s : out.scheduled) step_tables_[s.seq->request_id] = Table(s.seq);
    for (Sequence* seq : done) Finish(seq);
    const absl::Status inv = kv.CheckInvariants();
    EXPECT_TRUE(inv.ok()) << "step " << step_ << ": " << inv;
    return out;
  }

  void Finish(Sequence* seq) {
    sched.Remove(seq);
    EXPECT_TRUE(kv.Free(seq->id).ok()) << seq->request_id;
    seq->status = SequenceStatus::kFinished;
  }

  std::vector<int32_t> Table(const Sequence* seq) const {
    std::vector<int32_t> out;
    for (BlockId b : kv.BlockTable(seq->id)) out.push_back(b.value());
    return out;
  }

  // The block table `seq` had when the last step ran (before a release).
  std::vector<int32_t> StepTable(const Sequence* seq) const {
    const auto it = step_tables_.find(seq->request_id);
    return it == step_tables_.end() ? std::vector<int32_t>{} : it->second;
  }

  // Releases whatever is left and checks that the pool is whole again.
  void ReleaseAllAndCheck() {
    for (const auto& seq : seqs_) {
      if (seq->finished()) continue;
      sched.Remove(seq.get());
      (void)kv.Free(seq->id);  // NotFound for a sequence that never ran
    }
    EXPECT_EQ(sched.num_running(), 0);
    EXPECT_EQ(sched.num_waiting(), 0);
    EXPECT_EQ(sched.reserved_blocks(), 0);
    EXPECT_EQ(kv.NumSequences(), 0);
    EXPECT_EQ(kv.NumFreeBlocks(), num_blocks_);
    const absl::Status inv = kv.CheckInvariants();
    EXPECT_TRUE(inv.ok()) << inv;
  }

  int step() const { return step_; }

 private:
  static KvCacheManagerOptions Options(int32_t num_blocks, bool prefix_caching) {
    KvCacheManagerOptions o;
    o.num_blocks = num_blocks;
    o.block_size = kBlockSize;
    o.enable_prefix_caching = prefix_caching;
    return o;
  }

  const int32_t num_blocks_;
  std::vector<std::unique_ptr<Sequence>> seqs_;
  uint64_t next_arrival_ = 0;
  int step_ = 0;
  std::map<std::string, std::vector<int32_t>> step_tables_;

 public:
  int64_t now_ms = 0;
  KvCacheManager kv;
  Scheduler sched;
};

SchedulerConfig Config(int64_t max_num_batched_tokens) {
  SchedulerConfig c;
  c.max_num_batched_tokens = max_num_batched_tokens;
  return c;
}

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
