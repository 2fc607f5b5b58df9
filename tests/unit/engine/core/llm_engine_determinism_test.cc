// LlmEngine: greedy tokens do not depend on how the prompt was computed
// (whole, in chunks, partly from the prefix cache, recomputed after
// preemption with or without chunked prefill) nor on what shares the batch;
// seeded sampling is reproducible whatever the batch; every batching strategy
// (none, static, dynamic, continuous, paged) gives the same greedy tokens.
// Helpers and fixtures: llm_engine_test_util.h.
#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/llm_engine.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/llm_engine_test_util.h"

namespace tandem {
namespace {

using namespace llm_engine_test;  // NOLINT(build/namespaces): the shared helpers

// ---------------------------------------------------------------------------
// Greedy tokens do not depend on how the prompt was computed.

TEST(LlmEngineTest, ChunkedPrefillGivesReferenceTokens) {
  const std::vector<RefCase> cases = LoadCases(kShape);
  ASSERT_EQ(cases.size(), 4u);
  // Each prompt alone, prefilled 7 tokens per step.
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(16, 64, /*budget=*/7)));
    ASSERT_TRUE(engine->AddRequest(GreedyRequest("r", cases[i].prompt, 32)).ok());
    const Trace t = Drive(*engine);
    EXPECT_EQ(t.results.at("r").token_ids, cases[i].tokens) << "prompt length " << cases[i].prompt.size();
    EXPECT_EQ(t.results.at("r").finish_reason, FinishReason::kLength);
    // ceil(P / 7) prefill steps, the last of which samples the first token.
    const int64_t prefill_steps = (static_cast<int64_t>(cases[i].prompt.size()) + 6) / 7;
    EXPECT_EQ(t.first_token_step.at("r"), prefill_steps);
    EXPECT_EQ(t.num_steps, prefill_steps + 31);
    EXPECT_EQ(t.max_tokens_in_step, std::min<int64_t>(7, static_cast<int64_t>(cases[i].prompt.size())));
    ExpectPoolEmpty(*engine);
  }
  // All four together: chunks of different prompts and decode tokens share steps.
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(16, 64, /*budget=*/7)));
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(engine->AddRequest(GreedyRequest(absl::StrCat("r", i), cases[i].prompt, 32)).ok());
  }
  const Trace t = Drive(*engine);
  EXPECT_EQ(t.max_tokens_in_step, 7);
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(t.results.at(absl::StrCat("r", i)).token_ids, cases[i].tokens) << "case " << i;
  }
  ExpectPoolEmpty(*engine);
}

TEST(LlmEngineTest, PrefixCacheHitGivesSameTokensAsUncachedRun) {
  std::mt19937 rng(11);
  const std::vector<int32_t> a = RandomPrompt(rng, 40, 320);
  std::vector<int32_t> b(a.begin(), a.begin() + 32);  // a's first two full blocks
  const std::vector<int32_t> b_tail = RandomPrompt(rng, 9, 320);
  b.insert(b.end(), b_tail.begin(), b_tail.end());
  const std::vector<int32_t> c(a.begin(), a.begin() + 32);  // exactly two blocks: one must be recomputed

  EngineConfig no_cache = Config(16, 64);
  no_cache.enable_prefix_caching = false;
  std::map<std::string, std::vector<int32_t>> uncached;
  for (const auto& [id, prompt] : {std::pair{"a", a}, std::pair{"b", b}, std::pair{"c", c}}) {
    ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), no_cache));
    ASSERT_TRUE(engine->AddRequest(GreedyRequest(id, prompt, 12)).ok());
    uncached[id] = Drive(*engine).results.at(id).token_ids;
    EXPECT_EQ(engine->Stats().kv.prefix_hits_tokens, 0);
    EXPECT_EQ(engine->Stats().kv.prefix_queries_tokens, 0);
    EXPECT_EQ(engine->Stats().kv.num_cached_blocks, 0);
  }

  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(16, 64)));
  ASSERT_TRUE(engine->AddRequest(GreedyRequest("a", a, 12)).ok());
  EXPECT_EQ(Drive(*engine).results.at("a").token_ids, uncached["a"]);
  // a computed 40 + 11 = 51 tokens: three full blocks cached.
  EXPECT_EQ(engine->Stats().kv.num_cached_blocks, 3);
  EXPECT_EQ(engine->Stats().kv.prefix_hits_tokens, 0);

  ASSERT_TRUE(engine->AddRequest(GreedyRequest("b", b, 12)).ok());
  EXPECT_EQ(Drive(*engine).results.at("b").token_ids, uncached["b"]);
  KvCacheStats kv = engine->Stats().kv;
  EXPECT_EQ(kv.prefix_hits_tokens, 32);
  EXPECT_EQ(kv.prefix_hits_requests, 1);
  EXPECT_EQ(kv.prefix_queries_tokens, 40 + 41);
  EXPECT_EQ(kv.prefix_queries_requests, 2);

  // A prompt that is entirely cached still recomputes its last block.
  ASSERT_TRUE(engine->AddRequest(GreedyRequest("c", c, 12)).ok());
  EXPECT_EQ(Drive(*engine).results.at("c").token_ids, uncached["c"]);
  kv = engine->Stats().kv;
  EXPECT_EQ(kv.prefix_hits_tokens, 32 + 16);
  EXPECT_EQ(kv.prefix_hits_requests, 2);
  ExpectPoolEmpty(*engine);
}

class LlmEnginePreemptionTest : public ::testing::TestWithParam<bool> {};

TEST_P(LlmEnginePreemptionTest, PreemptedRequestsRecomputeToSameTokens) {
  std::mt19937 rng(12);
  std::vector<EngineRequest> requests;
  for (int i = 0; i < 4; ++i) {
    requests.push_back(GreedyRequest(absl::StrCat("p", i), RandomPrompt(rng, 10 + 3 * i, 320), 20));
  }
  // 12 blocks of 4 tokens: each request fits alone (at most 39 tokens of KV),
  // four together do not.
  EngineConfig config = Config(4, 12);
  config.enable_prefix_caching = GetParam();
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), config));
  for (const EngineRequest& r : requests) ASSERT_TRUE(engine->AddRequest(r).ok());
  const Trace t = Drive(*engine);
  EXPECT_GT(engine->Stats().num_preemptions, 0);
  for (const EngineRequest& r : requests) {
    const DriverResult alone = Alone(kShape, r);
    EXPECT_EQ(t.results.at(r.request_id).token_ids, alone.token_ids) << r.request_id;
    EXPECT_EQ(t.results.at(r.request_id).finish_reason, FinishReason::kLength);
    EXPECT_EQ(t.results.at(r.request_id).token_ids.size(), 20u);
  }
  ExpectPoolEmpty(*engine);
}

INSTANTIATE_TEST_SUITE_P(PrefixCaching, LlmEnginePreemptionTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "On" : "Off"; });

// Without chunked prefill a recomputation after preemption can outgrow the
// step budget (prompt + generated > max_num_batched_tokens); it must still run.
TEST(LlmEngineTest, PreemptionWithoutChunkedPrefillRecomputesToSameTokens) {
  std::mt19937 rng(20);
  std::vector<EngineRequest> requests;
  for (int i = 0; i < 4; ++i) {
    requests.push_back(GreedyRequest(absl::StrCat("n", i), RandomPrompt(rng, 8 + 2 * i, 320), 20));
  }
  EngineConfig config = Config(4, 12, /*budget=*/16);
  config.scheduler.enable_chunked_prefill = false;
  config.enable_prefix_caching = false;  // recompute everything
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), config));
  for (const EngineRequest& r : requests) ASSERT_TRUE(engine->AddRequest(r).ok());
  const Trace t = Drive(*engine, nullptr, /*max_steps=*/2000);
  EXPECT_GT(engine->Stats().num_preemptions, 0);
  EXPECT_LE(t.max_tokens_in_step, 16);
  for (const EngineRequest& r : requests) {
    ASSERT_EQ(t.results.count(r.request_id), 1u) << r.request_id;
    EXPECT_EQ(t.results.at(r.request_id).token_ids, Alone(kShape, r).token_ids) << r.request_id;
  }
  ExpectPoolEmpty(*engine);
}

TEST(LlmEngineTest, BatchCompositionDoesNotChangeGreedyTokens) {
  const std::vector<RefCase> cases = LoadCases(kShape);
  ASSERT_EQ(cases.size(), 4u);
  std::mt19937 rng(13);
  std::vector<EngineRequest> others;
  for (int i = 0; i < 6; ++i) {
    std::uniform_int_distribution<int32_t> len(1, 45), max_tokens(1, 30);
    others.push_back(GreedyRequest(absl::StrCat("o", i), RandomPrompt(rng, len(rng), 320), max_tokens(rng)));
  }
  // Small blocks and a 24-token budget: chunks, decodes and arrivals mix.
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(4, 128, /*budget=*/24)));
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(engine->AddRequest(GreedyRequest(absl::StrCat("r", i), cases[i].prompt, 32)).ok());
  }
  // The others arrive while the reference requests run (steps 0, 2, 4, ...).
  const Trace t = Drive(*engine, [&](int64_t step) {
    if (step % 2 == 0 && step / 2 < static_cast<int64_t>(others.size())) {
      ASSERT_TRUE(engine->AddRequest(others[static_cast<size_t>(step / 2)]).ok());
    }
  });
  EXPECT_GE(t.max_seqs_in_step, 5);
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(t.results.at(absl::StrCat("r", i)).token_ids, cases[i].tokens) << "case " << i;
  }
  for (const EngineRequest& o : others) {
    EXPECT_EQ(t.results.at(o.request_id).token_ids, Alone(kShape, o).token_ids) << o.request_id;
  }
  ExpectPoolEmpty(*engine);
}

// ---------------------------------------------------------------------------
// Seeded sampling is reproducible whatever the batch.

TEST(LlmEngineTest, SeededSamplingIsReproducibleAcrossBatchCompositions) {
  std::mt19937 rng(14);
  const EngineRequest target = SeededRequest("s", RandomPrompt(rng, 13, 320), 24, 1234);
  const std::vector<int32_t> alone = Alone(kShape, target).token_ids;
  ASSERT_EQ(alone.size(), 24u);

  auto others = [&](int n) {
    std::vector<EngineRequest> v;
    for (int i = 0; i < n; ++i) {
      v.push_back(i % 2 == 0 ? GreedyRequest(absl::StrCat("g", i), RandomPrompt(rng, 5 + 4 * i, 320), 20)
                             : SeededRequest(absl::StrCat("x", i), RandomPrompt(rng, 7 + 3 * i, 320), 20, 99 + i));
    }
    return v;
  };
  struct Setup {
    const char* name;
    EngineConfig config;
    int num_others;
  };
  const std::vector<Setup> setups = {
      {"with others", Config(16, 64), 4},
      {"chunked with others", Config(16, 64, /*budget=*/7), 4},
      // Target added last: under FCFS it is the first preemption victim.
      {"preempted", Config(4, 12), 3},
  };
  for (const Setup& s : setups) {
    ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), s.config));
    for (const EngineRequest& o : others(s.num_others)) ASSERT_TRUE(engine->AddRequest(o).ok());
    ASSERT_TRUE(engine->AddRequest(target).ok());
    const Trace t = Drive(*engine);
    EXPECT_EQ(t.results.at("s").token_ids, alone) << s.name;
    if (std::string(s.name) == "preempted") {
      EXPECT_GT(engine->Stats().num_preemptions, 0);
    }
    ExpectPoolEmpty(*engine);
  }
  // Another seed draws other tokens; the same seed again the same ones.
  EngineRequest other_seed = target;
  other_seed.sampling.seed = 1235;
  EXPECT_NE(Alone(kShape, other_seed).token_ids, alone);
  EXPECT_EQ(Alone(kShape, target).token_ids, alone);
  // Sampling is not greedy here (else the test proves nothing).
  EngineRequest greedy = GreedyRequest("s", target.prompt_token_ids, 24);
  EXPECT_NE(Alone(kShape, greedy).token_ids, alone);
}

// ---------------------------------------------------------------------------
// Every rung of the batching ladder gives the same greedy tokens.

TEST(LlmEngineTest, BatchingStrategiesGiveSameGreedyTokens) {
  const std::vector<RefCase> cases = LoadCases(kShape);
  ASSERT_EQ(cases.size(), 4u);
  std::mt19937 rng(18);
  std::vector<EngineRequest> requests;
  for (size_t i = 0; i < cases.size(); ++i) {
    requests.push_back(GreedyRequest(absl::StrCat("r", i), cases[i].prompt, 32));
  }
  requests.push_back(GreedyRequest("x4", RandomPrompt(rng, 20, 320), 10));
  requests.push_back(GreedyRequest("x5", RandomPrompt(rng, 3, 320), 25));
  std::map<std::string, std::vector<int32_t>> expected;
  for (size_t i = 0; i < cases.size(); ++i) expected[requests[i].request_id] = cases[i].tokens;
  for (size_t i = 4; i < requests.size(); ++i) expected[requests[i].request_id] = Alone(kShape, requests[i]).token_ids;

  struct Rung {
    BatchingStrategy strategy;
    int32_t max_running;  // most sequences running at once
  };
  for (const Rung rung : {Rung{BatchingStrategy::kNone, 1}, Rung{BatchingStrategy::kStatic, 4},
                          Rung{BatchingStrategy::kDynamic, 4}, Rung{BatchingStrategy::kContinuous, 6},
                          Rung{BatchingStrategy::kPaged, 6}}) {
    EngineConfig config = Config(16, 64);
    config.scheduler.batching = rung.strategy;
    config.scheduler.batch_size = 4;
    config.scheduler.max_batch_delay_ms = 0;
    ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), config));
    for (const EngineRequest& r : requests) ASSERT_TRUE(engine->AddRequest(r).ok());
    const Trace t = Drive(*engine);
    const std::string name(BatchingStrategyName(rung.strategy));
    EXPECT_EQ(t.max_running, rung.max_running) << name;
    for (const EngineRequest& r : requests) {
      EXPECT_EQ(t.results.at(r.request_id).token_ids, expected[r.request_id]) << name << " " << r.request_id;
      EXPECT_EQ(t.results.at(r.request_id).finish_reason, FinishReason::kLength) << name;
    }
    ExpectPoolEmpty(*engine);
  }
}

}  // namespace
}  // namespace tandem
