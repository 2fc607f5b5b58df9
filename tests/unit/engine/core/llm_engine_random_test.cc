// A randomized engine test: a seeded stream of arrivals (random prompt
// lengths, max_tokens, priorities; some sharing prefixes, some seeded
// sampling, some prefill-only, some reserved for external KV), random aborts
// in every state, a tiny KV pool that forces preemption and a small token
// budget that forces chunked prefill, under FCFS and priority, paged and
// continuous batching.
//
// After every step: the block manager's invariants hold, the pool accounts
// for every block, the engine's running + waiting + prefilled + awaiting
// counts equal the requests the test knows to be live, and no request
// produces output after finishing. At the end every request that was not
// aborted has exactly the tokens it gets alone in a fresh engine with a large
// pool, and the pool is empty.
#include <cstdlib>
#include <filesystem>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/llm_engine.h"
#include "engine/model/llama_model.h"
#include "gtest/gtest.h"
#include "tests/testing/engine_driver.h"

namespace tandem {
namespace {

constexpr char kShape[] = "llama_gqa_f32";  // 2 layers, vocab 320
constexpr int32_t kVocab = 320;
constexpr int32_t kBlockSize = 4;
constexpr int32_t kNumBlocks = 24;  // 96 token slots; a request needs at most 40 + 24
constexpr int64_t kBudget = 16;
constexpr int64_t kArrivalSteps = 1200;  // arrivals stop here; then the engine drains
constexpr int64_t kMaxSteps = 5000;
constexpr uint32_t kMaxMaxTokens = 24;

std::filesystem::path ModelDir() {
  const char* work = std::getenv("TANDEM_TEST_WORK");
  return std::filesystem::path(work ? work : "build/test_work") / "reference" / kShape / "model";
}

// References: the tokens of (prompt, seed) alone with max_tokens 24. A request
// with max_tokens m gets the first m (ignore_eos; the sampler's stream does
// not depend on max_tokens).
class References {
 public:
  const std::vector<int32_t>& Get(const EngineRequest& r) {
    const auto key = std::make_tuple(r.prompt_token_ids, r.sampling.seed.has_value(), r.sampling.seed.value_or(0));
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    EngineRequest full = r;
    full.request_id = "ref";
    full.prefill_only = false;
    full.priority = 0;
    full.sampling.max_tokens = kMaxMaxTokens;
    auto results = testing::Generate(ModelDir(), {full});
    EXPECT_TRUE(results.ok()) << results.status();
    std::vector<int32_t> tokens = results.ok() ? results->at("ref").token_ids : std::vector<int32_t>{};
    EXPECT_EQ(tokens.size(), kMaxMaxTokens);
    return cache_.emplace(key, std::move(tokens)).first->second;
  }

 private:
  std::map<std::tuple<std::vector<int32_t>, bool, uint64_t>, std::vector<int32_t>> cache_;
};

References& SharedReferences() {
  static References* refs = new References();
  return *refs;
}

enum class Kind { kNormal, kPrefillOnly, kExternal };

struct Tracked {
  EngineRequest request;
  Kind kind = Kind::kNormal;
  std::vector<int32_t> tokens;
  FinishReason finish_reason = FinishReason::kNone;
  bool finished = false;    // finished in the engine (normal), prefilled (prefill-only)
  bool aborted = false;
  bool released = false;    // prefill-only: blocks given back
  int64_t hold_until = 0;   // prefilled / reserved: step at which the test lets go
};

struct Param {
  QueuePolicy policy;
  BatchingStrategy batching;
  uint32_t seed;
  bool disaggregation = true;  // mix in prefill-only requests and external reservations
};

void PrintTo(const Param& p, std::ostream* os) {
  *os << BatchingStrategyName(p.batching) << (p.policy == QueuePolicy::kFcfs ? " fcfs" : " priority") << " seed "
      << p.seed << (p.disaggregation ? " with disaggregation" : "");
}

class LlmEngineRandomTest : public ::testing::TestWithParam<Param> {};

TEST_P(LlmEngineRandomTest, RandomTrafficMatchesRequestsRunAlone) {
  const Param param = GetParam();
  EngineConfig config;
  config.block_size = kBlockSize;
  config.num_kv_blocks = kNumBlocks;
  config.scheduler.max_num_batched_tokens = kBudget;
  config.scheduler.max_num_seqs = 8;
  config.scheduler.queue_policy = param.policy;
  config.scheduler.batching = param.batching;
  config.scheduler.priority_aging_steps = 16;
  auto model = LlamaModel::Load(ModelDir());
  ASSERT_TRUE(model.ok()) << model.status() << " (run the reference_fixtures test)";
  auto created = LlmEngine::Create(std::move(*model), config);
  ASSERT_TRUE(created.ok()) << created.status();
  LlmEngine& engine = **created;

  std::mt19937 rng(param.seed);
  auto uniform = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng) < p; };
  std::vector<std::vector<int32_t>> bases;  // shared prefixes
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> b;
    for (int64_t n = uniform(8, 28); n > 0; --n) b.push_back(static_cast<int32_t>(uniform(3, kVocab - 1)));
    bases.push_back(std::move(b));
  }

  std::map<std::string, Tracked> requests;
  int next_id = 0;
  auto new_request = [&](Kind kind) {
    EngineRequest r;
    r.request_id = absl::StrCat("r", next_id++);
    const int64_t length = uniform(1, 40);
    if (chance(0.4)) {
      const std::vector<int32_t>& base = bases[static_cast<size_t>(uniform(0, 3))];
      r.prompt_token_ids.assign(base.begin(), base.begin() + std::min<int64_t>(length, base.size()));
    }
    while (static_cast<int64_t>(r.prompt_token_ids.size()) < length) {
      r.prompt_token_ids.push_back(static_cast<int32_t>(uniform(3, kVocab - 1)));
    }
    r.sampling.temperature = 0.0f;
    r.sampling.ignore_eos = true;
    r.sampling.max_tokens = static_cast<uint32_t>(uniform(1, kMaxMaxTokens));
    if (chance(0.25)) {
      r.sampling.temperature = 1.0f;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = static_cast<uint64_t>(uniform(0, 1 << 20));
    }
    r.priority = static_cast<int32_t>(uniform(0, 3));
    r.prefill_only = kind == Kind::kPrefillOnly;
    Tracked t;
    t.request = r;
    t.kind = kind;
    return t;
  };

  int64_t num_aborts = 0, num_prefilled_released = 0, num_external = 0, num_outputs = 0;
  int64_t step = 0;
  for (; step < kMaxSteps; ++step) {
    const bool arriving = step < kArrivalSteps;
    // Arrivals.
    if (arriving && chance(0.3)) {
      for (int64_t n = uniform(1, 2); n > 0; --n) {
        const double k = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        Tracked t = new_request(!param.disaggregation ? Kind::kNormal
                                : k < 0.06                ? Kind::kPrefillOnly
                                : k < 0.10                ? Kind::kExternal
                                                          : Kind::kNormal);
        const std::string id = t.request.request_id;
        if (t.kind == Kind::kExternal) {
          auto blocks = engine.ReserveExternal(t.request);
          if (!blocks.ok()) {
            ASSERT_EQ(blocks.status().code(), absl::StatusCode::kResourceExhausted) << blocks.status();
            continue;  // no room now: nothing was registered
          }
          ASSERT_EQ(static_cast<int64_t>(blocks->size()),
                    (static_cast<int64_t>(t.request.prompt_token_ids.size()) + kBlockSize - 1) / kBlockSize);
          t.hold_until = step + uniform(0, 8);
          ++num_external;
        } else {
          ASSERT_TRUE(engine.AddRequest(t.request).ok()) << id;
        }
        requests.emplace(id, std::move(t));
      }
    }
    // Let go of prefilled and reserved sequences whose time has come.
    for (auto& [id, t] : requests) {
      if (t.aborted || t.released || step < t.hold_until) continue;
      if (t.kind == Kind::kPrefillOnly && t.finished) {
        ASSERT_TRUE(engine.ReleasePrefilled(id).ok()) << id;
        t.released = true;
        ++num_prefilled_released;
      } else if (t.kind == Kind::kExternal) {
        // Nothing writes its KV in this test: the reservation is cancelled.
        ASSERT_TRUE(engine.Abort(id)) << id;
        t.aborted = true;
        ++num_aborts;
      }
    }
    // Random aborts of live requests, in whatever state they are.
    if (chance(0.06)) {
      std::vector<std::string> live;
      for (const auto& [id, t] : requests) {
        if (!t.aborted && !t.released && !(t.kind == Kind::kNormal && t.finished)) live.push_back(id);
      }
      if (!live.empty()) {
        const std::string& id = live[static_cast<size_t>(uniform(0, static_cast<int64_t>(live.size()) - 1))];
        ASSERT_TRUE(engine.Abort(id)) << id;
        requests[id].aborted = true;
        ++num_aborts;
        EXPECT_FALSE(engine.Abort(id));
      }
    }
    if (chance(0.02)) {
      EXPECT_FALSE(engine.Abort("unknown"));
      for (const auto& [id, t] : requests) {
        if (t.kind == Kind::kNormal && t.finished) {
          EXPECT_FALSE(engine.Abort(id)) << id;
          break;
        }
      }
    }

    auto outs = engine.Step();
    ASSERT_TRUE(outs.ok()) << outs.status();
    for (const RequestOutput& o : *outs) {
      ++num_outputs;
      auto it = requests.find(o.request_id);
      ASSERT_NE(it, requests.end()) << o.request_id;
      Tracked& t = it->second;
      ASSERT_FALSE(t.aborted) << o.request_id << " produced output after Abort";
      ASSERT_FALSE(t.finished) << o.request_id << " produced output after finishing";
      ASSERT_EQ(o.new_token_ids.size(), 1u) << o.request_id;
      t.tokens.insert(t.tokens.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      if (t.kind == Kind::kPrefillOnly) {
        ASSERT_TRUE(o.finished) << o.request_id;
        t.finished = true;
        t.hold_until = step + uniform(0, 10);
        auto blocks = engine.PrefilledBlocks(o.request_id);
        ASSERT_TRUE(blocks.ok()) << blocks.status();
        EXPECT_EQ(static_cast<int64_t>(blocks->size()),
                  (static_cast<int64_t>(t.request.prompt_token_ids.size()) + kBlockSize - 1) / kBlockSize);
      } else if (o.finished) {
        t.finished = true;
        t.finish_reason = o.finish_reason;
      }
    }

    // Per-step consistency.
    const absl::Status inv = engine.kv_manager().CheckInvariants();
    ASSERT_TRUE(inv.ok()) << "step " << step << ": " << inv;
    const EngineStats s = engine.Stats();
    ASSERT_EQ(s.kv.num_blocks, kNumBlocks);
    ASSERT_EQ(s.kv.num_used_blocks + s.kv.num_free_blocks, kNumBlocks) << "step " << step;
    int32_t live_normal = 0, prefilled = 0, awaiting = 0;
    for (const auto& [id, t] : requests) {
      if (t.aborted || t.released) continue;
      if (t.kind == Kind::kExternal) {
        ++awaiting;
      } else if (t.kind == Kind::kPrefillOnly && t.finished) {
        ++prefilled;
      } else if (!t.finished) {
        ++live_normal;  // waiting or running (prefill-only ones before their first token too)
      }
    }
    ASSERT_EQ(s.num_running + s.num_waiting, live_normal) << "step " << step << ": a request was lost";
    ASSERT_EQ(s.num_prefilled, prefilled) << "step " << step;
    ASSERT_EQ(s.num_awaiting_kv, awaiting) << "step " << step;
    ASSERT_EQ(engine.HasUnfinishedRequests(), live_normal > 0);
    ASSERT_LE(s.num_running, config.scheduler.max_num_seqs);
    ASSERT_LE(s.last_step_num_tokens, kBudget);
    if (s.num_running + s.num_waiting == 0 && prefilled == 0 && awaiting == 0) {
      ASSERT_EQ(s.kv.num_used_blocks, 0) << "step " << step << ": blocks leaked";
    }
    if (!arriving && live_normal == 0 && prefilled == 0 && awaiting == 0) break;
  }
  ASSERT_LT(step, kMaxSteps) << "the engine did not drain";

  // Every request that was not aborted got exactly its tokens.
  int64_t num_checked = 0;
  for (auto& [id, t] : requests) {
    if (t.aborted) continue;
    const std::vector<int32_t>& ref = SharedReferences().Get(t.request);
    if (t.kind == Kind::kPrefillOnly) {
      ASSERT_EQ(t.tokens.size(), 1u) << id;
      EXPECT_EQ(t.tokens[0], ref[0]) << id;
    } else {
      ASSERT_TRUE(t.finished) << id;
      EXPECT_EQ(t.finish_reason, FinishReason::kLength) << id;
      EXPECT_EQ(t.tokens, std::vector<int32_t>(ref.begin(), ref.begin() + t.request.sampling.max_tokens))
          << id << " (prompt " << t.request.prompt_token_ids.size() << " tokens, seed "
          << t.request.sampling.seed.value_or(0) << ")";
    }
    ++num_checked;
  }
  const EngineStats s = engine.Stats();
  EXPECT_EQ(s.kv.num_used_blocks, 0);
  EXPECT_EQ(s.kv.num_free_blocks, kNumBlocks);
  EXPECT_EQ(s.num_running + s.num_waiting + s.num_prefilled + s.num_awaiting_kv, 0);
  EXPECT_GT(s.kv.prefix_hits_tokens, 0);
  EXPECT_GT(num_aborts, 20);
  if (param.disaggregation) {
    EXPECT_GT(num_prefilled_released, 5);
    // Under continuous batching most reservations are refused: the tiny pool
    // is promised to running sequences' whole contexts. Some must get through.
    EXPECT_GT(num_external, param.batching == BatchingStrategy::kPaged ? 5 : 0);
  }
  if (param.batching == BatchingStrategy::kPaged) {
    EXPECT_GT(s.num_preemptions, 0);
  }
  // Continuous batching reserves each sequence's whole context at admission,
  // so a running sequence never has to be preempted.
  if (param.batching == BatchingStrategy::kContinuous) {
    EXPECT_EQ(s.num_preemptions, 0) << "a running sequence lost blocks it had reserved (see "
                                       "LlmEngineTest.ContinuousBatchingReserveExternalRespectsReservedBlocks)";
  }
  std::printf("%s/%s seed %u: %zu requests, %lld checked, %lld aborts, %lld steps, %lld preemptions, "
              "%lld prefix-hit tokens, %lld outputs\n",
              std::string(BatchingStrategyName(param.batching)).c_str(),
              param.policy == QueuePolicy::kFcfs ? "fcfs" : "priority", param.seed, requests.size(),
              static_cast<long long>(num_checked), static_cast<long long>(num_aborts),
              static_cast<long long>(s.num_steps), static_cast<long long>(s.num_preemptions),
              static_cast<long long>(s.kv.prefix_hits_tokens), static_cast<long long>(num_outputs));
}

INSTANTIATE_TEST_SUITE_P(
    Policies, LlmEngineRandomTest,
    ::testing::Values(Param{QueuePolicy::kFcfs, BatchingStrategy::kPaged, 1},
                      Param{QueuePolicy::kPriority, BatchingStrategy::kPaged, 2},
                      Param{QueuePolicy::kFcfs, BatchingStrategy::kContinuous, 3},
                      Param{QueuePolicy::kPriority, BatchingStrategy::kContinuous, 4},
                      Param{QueuePolicy::kFcfs, BatchingStrategy::kPaged, 5, false},
                      Param{QueuePolicy::kFcfs, BatchingStrategy::kContinuous, 6, false}),
    [](const auto& info) {
      return std::string(BatchingStrategyName(info.param.batching)) +
             (info.param.policy == QueuePolicy::kFcfs ? "Fcfs" : "Priority") +
             (info.param.disaggregation ? "" : "NoDisaggregation");
    });

}  // namespace
}  // namespace tandem
