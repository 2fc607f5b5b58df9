// Shared helpers for the Scheduler tests (scheduler_*_test.cc, all in the
// scheduler_test binary), in the style of vLLM's tests/v1/core: no model, a
// tiny KV pool (block_size 4), an injected fake clock, and exact plans after
// every step: which sequences, in which order, how many tokens each, exact
// block tables, free counts and preempted lists. The test plays the engine's
// step protocol itself (Sim::Step). Every test ends with all sequences
// released, every block free and the KvCacheManager's invariants intact
// (Sim::ReleaseAllAndCheck). Header-only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/core/admission_policy.h"
#include "engine/core/kv_cache_manager.h"
#include "engine/core/scheduler.h"
#include "engine/core/scheduler_config.h"
#include "engine/core/sequence.h"
#include "gtest/gtest.h"

namespace tandem::scheduler_test {

inline constexpr int32_t kBlockSize = 4;

// (request id, num_new_tokens) per scheduled sequence, in batch order.
using Plan = std::vector<std::pair<std::string, int64_t>>;
using Names = std::vector<std::string>;

inline Plan PlanOf(const SchedulerOutput& out) {
  Plan p;
  for (const ScheduledSequence& s : out.scheduled) p.emplace_back(s.seq->request_id, s.num_new_tokens);
  return p;
}

inline Names PreemptedOf(const SchedulerOutput& out) {
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

inline SchedulerConfig Config(int64_t max_num_batched_tokens) {
  SchedulerConfig c;
  c.max_num_batched_tokens = max_num_batched_tokens;
  return c;
}

}  // namespace tandem::scheduler_test
