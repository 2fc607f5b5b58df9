// LlmEngine end to end on the tiny random-weight reference models (written by
// the `reference_fixtures` CTest fixture into $TANDEM_TEST_WORK/reference) and
// on the bundled tandem-shakespeare model (stop strings).
//
// Every token assertion is exact: against the float64 reference's greedy
// tokens (expected.json), or against the same request run alone in a fresh
// engine with a large pool. The engine must give a request the same tokens
// however its prompt is computed (whole, in chunks, partly from the prefix
// cache, recomputed after preemption, or in another engine) and whatever
// shares its batch.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/core/llm_engine.h"
#include "engine/core/output_processor.h"
#include "engine/model/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/engine_driver.h"

namespace tandem {
namespace {

using testing::DriverResult;
using testing::GreedyRequest;

#define TANDEM_CAT_INNER(a, b) a##b
#define TANDEM_CAT(a, b) TANDEM_CAT_INNER(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) ASSERT_OK_AND_ASSIGN_IMPL(TANDEM_CAT(status_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  ASSERT_TRUE(tmp.ok()) << tmp.status();          \
  lhs = std::move(*tmp)

// The main test model: 2 layers, 4:1 GQA, vocab 320, eos 2.
constexpr char kShape[] = "llama_gqa_f32";

std::filesystem::path WorkDir() {
  const char* work = std::getenv("TANDEM_TEST_WORK");
  return std::filesystem::path(work ? work : "build/test_work");
}
std::filesystem::path ModelDir(const std::string& shape) { return WorkDir() / "reference" / shape / "model"; }
std::filesystem::path BundledModelDir() {
  const char* src = std::getenv("TANDEM_SOURCE_DIR");
  return std::filesystem::path(src ? src : ".") / "models" / "tandem-shakespeare";
}

struct RefCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;  // 32 greedy tokens, eos ignored
};

std::vector<RefCase> LoadCases(const std::string& shape) {
  std::ifstream in(WorkDir() / "reference" / shape / "expected.json");
  EXPECT_TRUE(in.good()) << "missing fixture for " << shape << " (run the reference_fixtures test)";
  if (!in.good()) return {};
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<RefCase> cases;
  for (const auto& c : j["cases"]) {
    cases.push_back({c["prompt_token_ids"].get<std::vector<int32_t>>(), c["token_ids"].get<std::vector<int32_t>>()});
  }
  return cases;
}

absl::StatusOr<std::unique_ptr<LlmEngine>> NewEngine(const std::filesystem::path& dir, const EngineConfig& config) {
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(dir));
  return LlmEngine::Create(std::move(model), config);
}

EngineConfig Config(int32_t block_size, int64_t num_blocks, int64_t budget = 2048) {
  EngineConfig c;
  c.block_size = block_size;
  c.num_kv_blocks = num_blocks;
  c.scheduler.max_num_batched_tokens = budget;
  return c;
}

std::vector<int32_t> RandomPrompt(std::mt19937& rng, int32_t length, int32_t vocab) {
  std::uniform_int_distribution<int32_t> tok(3, vocab - 1);  // avoid bos / eos ids
  std::vector<int32_t> p(static_cast<size_t>(length));
  for (int32_t& t : p) t = tok(rng);
  return p;
}

EngineRequest SeededRequest(std::string id, std::vector<int32_t> prompt, uint32_t max_tokens, uint64_t seed) {
  EngineRequest r = GreedyRequest(std::move(id), std::move(prompt), max_tokens);
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = seed;
  return r;
}

// The request alone in a fresh engine with a large pool (256 blocks of 16).
DriverResult Alone(const std::string& shape, const EngineRequest& request) {
  auto results = testing::Generate(ModelDir(shape), {request});
  EXPECT_TRUE(results.ok()) << results.status();
  if (!results.ok()) return {};
  return results->at(request.request_id);
}

// What a whole run looked like (for shape assertions beyond the tokens).
struct Trace {
  std::map<std::string, DriverResult> results;
  int64_t num_steps = 0;
  int32_t max_running = 0;
  int32_t max_seqs_in_step = 0;
  int64_t max_tokens_in_step = 0;
  std::map<std::string, int64_t> first_token_step;  // 1-based step of the first token
};

// Steps until nothing is unfinished, checking the block manager's invariants
// and the pool's accounting after every step. `before_step(step)` may add or
// abort requests.
Trace Drive(LlmEngine& engine, const std::function<void(int64_t)>& before_step = nullptr,
            int64_t max_steps = 20000, int64_t run_at_least = 0) {
  Trace t;
  for (int64_t step = 0; step < run_at_least || engine.HasUnfinishedRequests(); ++step) {
    if (step >= max_steps) {
      ADD_FAILURE() << "engine did not finish in " << max_steps << " steps";
      break;
    }
    if (before_step) before_step(step);
    auto outs = engine.Step();
    EXPECT_TRUE(outs.ok()) << outs.status();
    if (!outs.ok()) break;
    ++t.num_steps;
    const EngineStats s = engine.Stats();
    EXPECT_TRUE(engine.kv_manager().CheckInvariants().ok()) << engine.kv_manager().CheckInvariants();
    EXPECT_EQ(s.kv.num_used_blocks + s.kv.num_free_blocks, s.kv.num_blocks);
    t.max_running = std::max(t.max_running, s.num_running);
    t.max_seqs_in_step = std::max(t.max_seqs_in_step, s.last_step_num_seqs);
    t.max_tokens_in_step = std::max(t.max_tokens_in_step, s.last_step_num_tokens);
    for (const RequestOutput& o : *outs) {
      EXPECT_LE(o.new_token_ids.size(), 1u);
      DriverResult& r = t.results[o.request_id];
      if (r.token_ids.empty() && !o.new_token_ids.empty()) t.first_token_step[o.request_id] = t.num_steps;
      EXPECT_EQ(r.finish_reason, FinishReason::kNone) << o.request_id << " produced output after finishing";
      r.token_ids.insert(r.token_ids.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      if (o.finished) r.finish_reason = o.finish_reason;
    }
  }
  return t;
}

void ExpectPoolEmpty(const LlmEngine& engine) {
  const EngineStats s = engine.Stats();
  EXPECT_EQ(s.num_running, 0);
  EXPECT_EQ(s.num_waiting, 0);
  EXPECT_EQ(s.num_awaiting_kv, 0);
  EXPECT_EQ(s.num_prefilled, 0);
  EXPECT_EQ(s.kv.num_used_blocks, 0);
  EXPECT_EQ(s.kv.num_free_blocks, s.kv.num_blocks);
  EXPECT_TRUE(engine.kv_manager().CheckInvariants().ok());
}

// ---------------------------------------------------------------------------
// 1. Greedy tokens do not depend on how the prompt was computed.

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
// 2. Seeded sampling is reproducible whatever the batch.

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
// 3. Sampling parameters end to end.

TEST(LlmEngineTest, TopKOneEqualsGreedy) {
  const std::vector<RefCase> cases = LoadCases(kShape);
  ASSERT_EQ(cases.size(), 4u);
  for (const float temperature : {1.0f, 0.7f, 1.5f}) {
    EngineRequest r = SeededRequest("k", cases[2].prompt, 32, 5);
    r.sampling.top_p = 1.0f;
    r.sampling.top_k = 1;
    r.sampling.temperature = temperature;
    EXPECT_EQ(Alone(kShape, r).token_ids, cases[2].tokens) << "temperature " << temperature;
  }
}

TEST(LlmEngineTest, MaxTokensEndsWithLengthAtExactCount) {
  const std::vector<RefCase> cases = LoadCases(kShape);
  ASSERT_EQ(cases.size(), 4u);
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(16, 64)));
  const std::vector<uint32_t> limits = {1, 2, 5, 17, 32};
  for (size_t i = 0; i < limits.size(); ++i) {
    ASSERT_TRUE(engine->AddRequest(GreedyRequest(absl::StrCat("m", limits[i]), cases[i % 4].prompt, limits[i])).ok());
  }
  const Trace t = Drive(*engine);
  for (size_t i = 0; i < limits.size(); ++i) {
    const DriverResult& r = t.results.at(absl::StrCat("m", limits[i]));
    const std::vector<int32_t>& ref = cases[i % 4].tokens;
    EXPECT_EQ(r.token_ids, std::vector<int32_t>(ref.begin(), ref.begin() + limits[i]));
    EXPECT_EQ(r.finish_reason, FinishReason::kLength);
  }
  EXPECT_EQ(t.num_steps, 32);  // the longest request: one prefill step + 31 decodes
  ExpectPoolEmpty(*engine);
}

TEST(LlmEngineTest, StopTokenIdsFinishAtFirstOccurrence) {
  const std::vector<RefCase> cases = LoadCases(kShape);
  ASSERT_EQ(cases.size(), 4u);
  for (const RefCase& c : cases) {
    const std::vector<int32_t>& ref = c.tokens;
    // The first token that occurs twice (stop at its first occurrence), and a
    // token first seen at position >= 3.
    std::vector<size_t> stops;
    for (size_t j = 0; j < ref.size() && stops.empty(); ++j) {
      if (std::count(ref.begin(), ref.end(), ref[j]) >= 2) stops.push_back(j);
    }
    for (size_t j = 3; j < ref.size(); ++j) {
      if (std::find(ref.begin(), ref.begin() + j, ref[j]) == ref.begin() + j) {
        stops.push_back(j);
        break;
      }
    }
    ASSERT_FALSE(stops.empty());
    for (size_t j : stops) {
      EngineRequest r = GreedyRequest("t", c.prompt, 32);
      r.sampling.stop_token_ids = {ref[j], 1000000};  // an id the model never produces is harmless
      const DriverResult got = Alone(kShape, r);
      EXPECT_EQ(got.token_ids, std::vector<int32_t>(ref.begin(), ref.begin() + j + 1)) << "stop id " << ref[j];
      EXPECT_EQ(got.finish_reason, FinishReason::kStop);
    }
  }
}

TEST(LlmEngineTest, EosStopsUnlessIgnoreEos) {
  // Find a reference case whose greedy output contains an eos id after the
  // first position (the shapes use eos 2, or [2, 7] for llama_bf16).
  bool found = false;
  for (const std::string shape : {"llama_head_dim_f32", "mistral_f16", "llama_bias_f32", "llama_bf16",
                                  "llama_mha_f32", "llama_gqa_f32", "sharded_f32"}) {
    ASSERT_OK_AND_ASSIGN(auto model, LlamaModel::Load(ModelDir(shape)));
    const std::vector<int32_t> eos = model->config().eos_token_ids;
    ASSERT_FALSE(eos.empty()) << shape;
    for (const RefCase& c : LoadCases(shape)) {
      size_t k = 0;
      while (k < c.tokens.size() && std::find(eos.begin(), eos.end(), c.tokens[k]) == eos.end()) ++k;
      if (k == 0 || k == c.tokens.size()) continue;
      found = true;
      EngineRequest r = GreedyRequest("e", c.prompt, 32);
      r.sampling.ignore_eos = false;
      DriverResult got = Alone(shape, r);
      EXPECT_EQ(got.token_ids, std::vector<int32_t>(c.tokens.begin(), c.tokens.begin() + k + 1)) << shape;
      EXPECT_EQ(got.finish_reason, FinishReason::kStop) << shape;
      r.sampling.ignore_eos = true;
      got = Alone(shape, r);
      EXPECT_EQ(got.token_ids, c.tokens) << shape;
      EXPECT_EQ(got.finish_reason, FinishReason::kLength) << shape;
      break;
    }
    if (found) break;
  }
  EXPECT_TRUE(found) << "no reference case produced an eos token";
}

// Log-softmax (float64) of the model's logits after prompt + generated[0..j).
std::vector<double> ModelLogSoftmax(LlamaModel& model, const std::vector<int32_t>& tokens) {
  const int64_t bs = 16;
  const int64_t num_blocks = (static_cast<int64_t>(tokens.size()) + bs - 1) / bs;
  KvCache cache(model.MakeKvCacheShape(num_blocks, bs));
  ForwardBatch b;
  SequenceSlice slice;
  slice.num_query_tokens = static_cast<int32_t>(tokens.size());
  slice.context_len = static_cast<int32_t>(tokens.size());
  for (int32_t i = 0; i < num_blocks; ++i) slice.block_table.push_back(i);
  for (size_t p = 0; p < tokens.size(); ++p) {
    b.token_ids.push_back(tokens[p]);
    b.positions.push_back(static_cast<int32_t>(p));
    b.slot_mapping.push_back(static_cast<int64_t>(p));
  }
  b.seqs.push_back(slice);
  b.logit_indices.push_back(b.num_tokens() - 1);
  auto logits = model.Forward(b, cache);
  EXPECT_TRUE(logits.ok()) << logits.status();
  if (!logits.ok()) return {};
  double mx = -INFINITY;
  for (float v : *logits) mx = std::max(mx, static_cast<double>(v));
  double sum = 0.0;
  for (float v : *logits) sum += std::exp(static_cast<double>(v) - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out;
  for (float v : *logits) out.push_back(static_cast<double>(v) - lse);
  return out;
}

TEST(LlmEngineTest, LogprobsEqualLogSoftmaxOfModelLogits) {
  const std::vector<RefCase> cases = LoadCases(kShape);
  ASSERT_EQ(cases.size(), 4u);
  ASSERT_OK_AND_ASSIGN(auto model, LlamaModel::Load(ModelDir(kShape)));
  EngineRequest greedy = GreedyRequest("g", cases[1].prompt, 8);
  greedy.sampling.logprobs = 5;
  // Sampled with penalties: logprobs still describe the model's distribution.
  EngineRequest sampled = SeededRequest("s", cases[2].prompt, 8, 21);
  sampled.sampling.logprobs = 3;
  sampled.sampling.repetition_penalty = 1.3f;
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(16, 64)));
  ASSERT_TRUE(engine->AddRequest(greedy).ok());
  ASSERT_TRUE(engine->AddRequest(sampled).ok());
  std::map<std::string, std::vector<SampledToken>> samples;
  while (engine->HasUnfinishedRequests()) {
    auto outs = engine->Step();
    ASSERT_TRUE(outs.ok()) << outs.status();
    for (const RequestOutput& o : *outs) {
      ASSERT_EQ(o.new_samples.size(), o.new_token_ids.size());
      for (size_t i = 0; i < o.new_samples.size(); ++i) {
        EXPECT_EQ(o.new_samples[i].token_id, o.new_token_ids[i]);
        samples[o.request_id].push_back(o.new_samples[i]);
      }
    }
  }
  for (const EngineRequest* r : {&greedy, &sampled}) {
    const std::vector<SampledToken>& got = samples[r->request_id];
    ASSERT_EQ(got.size(), 8u) << r->request_id;
    std::vector<int32_t> context = r->prompt_token_ids;
    for (size_t j = 0; j < got.size(); ++j) {
      const std::vector<double> lsm = ModelLogSoftmax(*model, context);
      ASSERT_EQ(lsm.size(), 320u);
      EXPECT_NEAR(got[j].logprob, lsm[static_cast<size_t>(got[j].token_id)], 1e-5)
          << r->request_id << " token " << j;
      ASSERT_EQ(got[j].top_logprobs.size(), r->sampling.logprobs);
      std::vector<int32_t> order(lsm.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return lsm[a] > lsm[b]; });
      for (size_t k = 0; k < got[j].top_logprobs.size(); ++k) {
        EXPECT_EQ(got[j].top_logprobs[k].first, order[k]) << r->request_id << " token " << j << " rank " << k;
        EXPECT_NEAR(got[j].top_logprobs[k].second, lsm[static_cast<size_t>(order[k])], 1e-5);
      }
      if (r == &greedy) {
        EXPECT_EQ(got[j].token_id, order[0]);
      }
      context.push_back(got[j].token_id);
    }
  }
  EXPECT_EQ(samples["g"].front().token_id, cases[1].tokens[0]);
}

// ---------------------------------------------------------------------------
// 4. Abort frees every block at once, in any state.

TEST(LlmEngineTest, AbortWaitingRequestNeverScheduled) {
  EngineConfig config = Config(4, 32);
  config.scheduler.max_num_seqs = 1;
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), config));
  std::mt19937 rng(15);
  const EngineRequest a = GreedyRequest("a", RandomPrompt(rng, 10, 320), 6);
  ASSERT_TRUE(engine->AddRequest(a).ok());
  ASSERT_TRUE(engine->AddRequest(GreedyRequest("b", RandomPrompt(rng, 9, 320), 6)).ok());
  EXPECT_TRUE(engine->Abort("b"));  // before any step
  ASSERT_TRUE(engine->AddRequest(GreedyRequest("c", RandomPrompt(rng, 9, 320), 6)).ok());
  ASSERT_TRUE(engine->Step().ok());
  EngineStats s = engine->Stats();
  EXPECT_EQ(s.num_running, 1);
  EXPECT_EQ(s.num_waiting, 1);
  EXPECT_EQ(s.kv.num_used_blocks, 3);  // a: 10 tokens in blocks of 4
  EXPECT_TRUE(engine->Abort("c"));     // waiting behind the max_num_seqs cap
  s = engine->Stats();
  EXPECT_EQ(s.num_waiting, 0);
  EXPECT_EQ(s.kv.num_used_blocks, 3);
  EXPECT_FALSE(engine->Abort("c"));
  EXPECT_FALSE(engine->Abort("b"));
  EXPECT_FALSE(engine->Abort("never-added"));
  const Trace t = Drive(*engine);
  EXPECT_EQ(t.results.count("b"), 0u);
  EXPECT_EQ(t.results.count("c"), 0u);
  ASSERT_EQ(t.results.count("a"), 1u);
  std::vector<int32_t> a_tokens = Alone(kShape, a).token_ids;
  a_tokens.erase(a_tokens.begin());  // the first token came from the step above
  EXPECT_EQ(t.results.at("a").token_ids, a_tokens);
  EXPECT_FALSE(engine->Abort("a"));  // finished
  ExpectPoolEmpty(*engine);
}

TEST(LlmEngineTest, AbortMidChunkedPrefillAndInDecodeFreesBlocks) {
  std::mt19937 rng(16);
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(4, 32, /*budget=*/7)));
  ASSERT_TRUE(engine->AddRequest(GreedyRequest("long", RandomPrompt(rng, 29, 320), 8)).ok());
  ASSERT_TRUE(engine->Step().ok());
  EngineStats s = engine->Stats();
  EXPECT_EQ(s.num_running, 1);
  EXPECT_EQ(s.last_step_num_tokens, 7);
  EXPECT_EQ(s.kv.num_used_blocks, 2);  // 7 tokens in blocks of 4
  ASSERT_TRUE(engine->Step().ok());
  EXPECT_EQ(engine->Stats().kv.num_used_blocks, 4);  // 14 tokens
  EXPECT_TRUE(engine->Abort("long"));
  ExpectPoolEmpty(*engine);
  EXPECT_FALSE(engine->HasUnfinishedRequests());
  EXPECT_EQ(engine->Stats().kv.num_cached_blocks, 3);  // full blocks stay findable while free

  // Decode: two requests, one aborted mid-decode; the other holds exactly its blocks.
  const EngineRequest keep = GreedyRequest("keep", RandomPrompt(rng, 10, 320), 12);
  ASSERT_TRUE(engine->AddRequest(keep).ok());
  ASSERT_TRUE(engine->AddRequest(GreedyRequest("drop", RandomPrompt(rng, 6, 320), 12)).ok());
  std::map<std::string, std::vector<int32_t>> tokens;
  for (int step = 0; step < 5; ++step) {
    auto outs = engine->Step();
    ASSERT_TRUE(outs.ok());
    for (const RequestOutput& o : *outs) {
      tokens[o.request_id].insert(tokens[o.request_id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
    }
  }
  // Steps (budget 7): keep 7 | keep 3 (samples) + drop 4 | keep 1 + drop 2
  // (samples) | 1 + 1 | 1 + 1. keep: 4 tokens, 13 computed (4 blocks); drop:
  // 3 tokens, 8 computed (2 blocks).
  EXPECT_EQ(tokens["keep"].size(), 4u);
  EXPECT_EQ(tokens["drop"].size(), 3u);
  EXPECT_EQ(engine->Stats().kv.num_used_blocks, 4 + 2);
  EXPECT_TRUE(engine->Abort("drop"));
  EXPECT_EQ(engine->Stats().kv.num_used_blocks, 4);
  EXPECT_EQ(engine->Stats().num_running, 1);
  const Trace t = Drive(*engine);
  tokens["keep"].insert(tokens["keep"].end(), t.results.at("keep").token_ids.begin(),
                        t.results.at("keep").token_ids.end());
  EXPECT_EQ(tokens["keep"], Alone(kShape, keep).token_ids);
  EXPECT_EQ(t.results.count("drop"), 0u);
  ExpectPoolEmpty(*engine);
}

TEST(LlmEngineTest, AbortPrefilledAndAwaitingKvSequencesFreesBlocks) {
  std::mt19937 rng(17);
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(4, 32)));
  EngineRequest pre = GreedyRequest("pre", RandomPrompt(rng, 13, 320), 8);
  pre.prefill_only = true;
  ASSERT_TRUE(engine->AddRequest(pre).ok());
  auto outs = engine->Step();
  ASSERT_TRUE(outs.ok());
  ASSERT_EQ(outs->size(), 1u);
  EXPECT_TRUE((*outs)[0].finished);
  EXPECT_EQ((*outs)[0].new_token_ids.size(), 1u);
  EXPECT_FALSE(engine->HasUnfinishedRequests());
  EngineStats s = engine->Stats();
  EXPECT_EQ(s.num_prefilled, 1);
  EXPECT_EQ(s.num_running, 0);
  EXPECT_EQ(s.kv.num_used_blocks, 4);  // 13 prompt tokens
  ASSERT_TRUE(engine->PrefilledBlocks("pre").ok());
  EXPECT_EQ(engine->PrefilledBlocks("pre")->size(), 4u);

  auto reserved = engine->ReserveExternal(GreedyRequest("ext", RandomPrompt(rng, 9, 320), 8));
  ASSERT_TRUE(reserved.ok()) << reserved.status();
  EXPECT_EQ(reserved->size(), 3u);
  s = engine->Stats();
  EXPECT_EQ(s.num_awaiting_kv, 1);
  EXPECT_EQ(s.kv.num_used_blocks, 7);
  // Neither state is stepped.
  outs = engine->Step();
  ASSERT_TRUE(outs.ok());
  EXPECT_TRUE(outs->empty());

  EXPECT_TRUE(engine->Abort("pre"));
  s = engine->Stats();
  EXPECT_EQ(s.num_prefilled, 0);
  EXPECT_EQ(s.kv.num_used_blocks, 3);
  EXPECT_EQ(engine->PrefilledBlocks("pre").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine->ReleasePrefilled("pre").code(), absl::StatusCode::kNotFound);

  EXPECT_TRUE(engine->Abort("ext"));
  EXPECT_EQ(engine->ActivateExternal("ext", 5).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(engine->Abort("ext"));
  EXPECT_FALSE(engine->Abort("pre"));
  ExpectPoolEmpty(*engine);
}

// ---------------------------------------------------------------------------
// 5. Every rung of the batching ladder gives the same greedy tokens.

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

// ---------------------------------------------------------------------------
// 6. Disaggregation: prefill in engine A, decode in engine B.

// Copies the KV of `a_blocks` in A into `b_blocks` in B, layer by layer.
void CopyKv(LlmEngine& a, const std::vector<BlockId>& a_blocks, LlmEngine& b, const std::vector<BlockId>& b_blocks) {
  ASSERT_EQ(a_blocks.size(), b_blocks.size());
  const int64_t num_layers = a.kv_cache().shape().num_layers;
  ASSERT_EQ(b.kv_cache().shape().num_layers, num_layers);
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    for (size_t i = 0; i < a_blocks.size(); ++i) {
      const std::span<uint8_t> src = a.kv_cache().BlockSpan(layer, a_blocks[i].value());
      const std::span<uint8_t> dst = b.kv_cache().BlockSpan(layer, b_blocks[i].value());
      ASSERT_EQ(src.size(), dst.size());
      std::memcpy(dst.data(), src.data(), src.size());
    }
  }
}

TEST(LlmEngineTest, DisaggregatedPrefillAndDecodeEqualSingleEngine) {
  const std::vector<RefCase> cases = LoadCases(kShape);
  ASSERT_EQ(cases.size(), 4u);
  const EngineRequest greedy = GreedyRequest("g", cases[3].prompt, 32);
  const EngineRequest sampled = SeededRequest("s", cases[3].prompt, 32, 4321);
  for (const EngineRequest* request : {&greedy, &sampled}) {
    const std::vector<int32_t> single = Alone(kShape, *request).token_ids;
    if (request == &greedy) {
      EXPECT_EQ(single, cases[3].tokens);
    }

    ASSERT_OK_AND_ASSIGN(auto a, NewEngine(ModelDir(kShape), Config(4, 32)));
    ASSERT_OK_AND_ASSIGN(auto b, NewEngine(ModelDir(kShape), Config(4, 32)));
    EngineRequest prefill = *request;
    prefill.prefill_only = true;
    ASSERT_TRUE(a->AddRequest(prefill).ok());
    const Trace ta = Drive(*a);
    const DriverResult& first = ta.results.at(request->request_id);
    ASSERT_EQ(first.token_ids.size(), 1u);
    EXPECT_EQ(a->Stats().num_prefilled, 1);
    ASSERT_OK_AND_ASSIGN(const std::vector<BlockId> a_blocks, a->PrefilledBlocks(request->request_id));
    EXPECT_EQ(a_blocks.size(), 8u);  // 29 prompt tokens in blocks of 4

    // B holds another reservation first, so its block ids differ from A's.
    ASSERT_TRUE(b->ReserveExternal(GreedyRequest("other", {5, 6, 7, 8, 9}, 4)).ok());
    ASSERT_OK_AND_ASSIGN(const std::vector<BlockId> b_blocks, b->ReserveExternal(*request));
    EXPECT_NE(b_blocks, a_blocks);
    EXPECT_EQ(b->Stats().num_awaiting_kv, 2);
    EXPECT_EQ(b->Stats().kv.num_used_blocks, 2 + 8);
    CopyKv(*a, a_blocks, *b, b_blocks);
    ASSERT_TRUE(b->ActivateExternal(request->request_id, first.token_ids[0]).ok());
    EXPECT_EQ(b->Stats().num_running, 1);
    EXPECT_EQ(b->Stats().num_awaiting_kv, 1);
    const Trace tb = Drive(*b);
    std::vector<int32_t> tokens = first.token_ids;
    const DriverResult& rest = tb.results.at(request->request_id);
    tokens.insert(tokens.end(), rest.token_ids.begin(), rest.token_ids.end());
    EXPECT_EQ(tokens, single) << request->request_id;
    EXPECT_EQ(rest.finish_reason, FinishReason::kLength);
    EXPECT_EQ(tb.num_steps, 31);  // decode only: no prompt token is recomputed

    ASSERT_TRUE(a->ReleasePrefilled(request->request_id).ok());
    EXPECT_TRUE(b->Abort("other"));
    ExpectPoolEmpty(*a);
    ExpectPoolEmpty(*b);
  }
}

TEST(LlmEngineTest, DisaggregationErrors) {
  ASSERT_OK_AND_ASSIGN(auto b, NewEngine(ModelDir(kShape), Config(4, 8)));
  EXPECT_EQ(b->ActivateExternal("unknown", 5).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b->PrefilledBlocks("unknown").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b->ReleasePrefilled("unknown").code(), absl::StatusCode::kNotFound);

  std::mt19937 rng(19);
  const EngineRequest first = GreedyRequest("first", RandomPrompt(rng, 17, 320), 4);   // 5 blocks
  const EngineRequest second = GreedyRequest("second", RandomPrompt(rng, 16, 320), 4);  // 4 blocks
  ASSERT_TRUE(b->ReserveExternal(first).ok());
  EXPECT_EQ(b->Stats().kv.num_used_blocks, 5);
  // Fits the pool, but not now: nothing is allocated or registered.
  EXPECT_EQ(b->ReserveExternal(second).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(b->Stats().kv.num_used_blocks, 5);
  EXPECT_EQ(b->Stats().num_awaiting_kv, 1);
  EXPECT_FALSE(b->Abort("second"));
  EXPECT_TRUE(b->kv_manager().CheckInvariants().ok());
  // Larger than the whole pool: a request error, not a wait.
  EXPECT_EQ(b->ReserveExternal(GreedyRequest("huge", RandomPrompt(rng, 30, 320), 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A duplicate of the reservation.
  EXPECT_EQ(b->ReserveExternal(first).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(b->AddRequest(first).code(), absl::StatusCode::kAlreadyExists);
  // A first token outside the vocabulary leaves the reservation in place.
  EXPECT_EQ(b->ActivateExternal("first", 320).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->ActivateExternal("first", -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b->Stats().num_awaiting_kv, 1);
  EXPECT_TRUE(b->Abort("first"));
  ASSERT_TRUE(b->ReserveExternal(second).ok());  // room now, same id accepted
  EXPECT_EQ(b->Stats().kv.num_used_blocks, 4);
  EXPECT_TRUE(b->Abort("second"));
  ExpectPoolEmpty(*b);
}

// Continuous batching promises each running sequence its whole context
// (prompt + max_tokens) at admission, so it never preempts. A reservation for
// external KV must not take blocks already promised to running sequences.
TEST(LlmEngineTest, ContinuousBatchingReserveExternalRespectsReservedBlocks) {
  EngineConfig config = Config(4, 12);
  config.scheduler.batching = BatchingStrategy::kContinuous;
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), config));
  std::mt19937 rng(21);
  // 4 + 28 = 32 tokens: 8 of the 12 blocks promised to "a" at admission.
  const EngineRequest a = GreedyRequest("a", RandomPrompt(rng, 4, 320), 28);
  ASSERT_TRUE(engine->AddRequest(a).ok());
  ASSERT_TRUE(engine->Step().ok());
  EXPECT_EQ(engine->Stats().num_running, 1);
  EXPECT_EQ(engine->Stats().kv.num_used_blocks, 1);
  // 11 free blocks, 7 of them promised to "a": a 20-token prompt (5 blocks)
  // does not fit now.
  auto reserved = engine->ReserveExternal(GreedyRequest("ext", RandomPrompt(rng, 20, 320), 4));
  EXPECT_EQ(reserved.status().code(), absl::StatusCode::kResourceExhausted)
      << "ReserveExternal took blocks promised to a running sequence";
  // Whatever happened, "a" runs to completion; the reservation (if any) is
  // cancelled after 40 steps so the run ends.
  const Trace t = Drive(*engine, [&](int64_t step) {
    if (step == 40) engine->Abort("ext");
  }, /*max_steps=*/500, /*run_at_least=*/41);
  EXPECT_EQ(engine->Stats().num_preemptions, 0);
  std::vector<int32_t> tokens = Alone(kShape, a).token_ids;
  tokens.erase(tokens.begin());  // the first token came from the step above
  EXPECT_EQ(t.results.at("a").token_ids, tokens);
  ExpectPoolEmpty(*engine);
}

// ---------------------------------------------------------------------------
// 7. Validation errors.

TEST(LlmEngineTest, InvalidRequestsAreRejectedWithExactCodes) {
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(16, 4)));  // 64 token slots
  auto code = [&](EngineRequest r) { return engine->AddRequest(std::move(r)).code(); };
  using absl::StatusCode;
  EXPECT_EQ(code(GreedyRequest("e", {}, 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(GreedyRequest("", {5}, 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(GreedyRequest("v", {5, 320}, 4)), StatusCode::kInvalidArgument);  // vocab is 320
  EXPECT_EQ(code(GreedyRequest("v", {-1}, 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(GreedyRequest("v", {319}, 4)), StatusCode::kOk);
  EXPECT_EQ(code(GreedyRequest("v", {5}, 4)), StatusCode::kAlreadyExists);
  // Whole pool: 64 tokens.
  EXPECT_EQ(code(GreedyRequest("pool", std::vector<int32_t>(40, 5), 25)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(GreedyRequest("pool", std::vector<int32_t>(40, 5), 24)), StatusCode::kOk);

  auto field_error = [&](const char* field, auto mutate) {
    EngineRequest r = GreedyRequest(absl::StrCat("bad_", field), {5, 6}, 4);
    mutate(r.sampling);
    const absl::Status st = engine->AddRequest(r);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << field;
    EXPECT_TRUE(absl::StartsWith(st.message(), field)) << st;
  };
  field_error("temperature", [](SamplingParams& p) { p.temperature = -0.5f; });
  field_error("temperature", [](SamplingParams& p) { p.temperature = NAN; });
  field_error("top_p", [](SamplingParams& p) { p.top_p = 0.0f; });
  field_error("top_p", [](SamplingParams& p) { p.top_p = 1.5f; });
  field_error("top_k", [](SamplingParams& p) { p.top_k = -2; });
  field_error("min_p", [](SamplingParams& p) { p.min_p = 1.5f; });
  field_error("repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; });
  field_error("frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = 2.5f; });
  field_error("presence_penalty", [](SamplingParams& p) { p.presence_penalty = -2.5f; });
  field_error("max_tokens", [](SamplingParams& p) { p.max_tokens = 0; });
  field_error("logprobs", [](SamplingParams& p) { p.logprobs = 21; });
  // Only the two valid requests were queued.
  EXPECT_EQ(engine->Stats().num_waiting, 2);
  EXPECT_EQ(engine->Stats().kv.num_used_blocks, 0);

  // Duplicate ids while running, and reuse once finished.
  const Trace t = Drive(*engine, [&](int64_t step) {
    if (step == 1) {
      EXPECT_EQ(engine->AddRequest(GreedyRequest("pool", {5}, 1)).code(), StatusCode::kAlreadyExists);
    }
  });
  EXPECT_EQ(t.results.at("v").token_ids.size(), 4u);
  EXPECT_EQ(engine->AddRequest(GreedyRequest("v", {5}, 4)).code(), StatusCode::kOk);
  EXPECT_TRUE(engine->Abort("v"));
  ExpectPoolEmpty(*engine);
}

TEST(LlmEngineTest, ContextLengthAndChunkingLimits) {
  // llama3_rope_f32 has a 256-token context.
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir("llama3_rope_f32"), Config(16, 64)));
  EXPECT_EQ(engine->AddRequest(GreedyRequest("c", std::vector<int32_t>(200, 5), 57)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->AddRequest(GreedyRequest("c", std::vector<int32_t>(256, 5), 1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->AddRequest(GreedyRequest("c", std::vector<int32_t>(200, 5), 56)).code(), absl::StatusCode::kOk);

  EngineConfig no_chunking = Config(16, 64, /*budget=*/16);
  no_chunking.scheduler.enable_chunked_prefill = false;
  ASSERT_OK_AND_ASSIGN(auto engine2, NewEngine(ModelDir(kShape), no_chunking));
  EXPECT_EQ(engine2->AddRequest(GreedyRequest("n", std::vector<int32_t>(17, 5), 4)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine2->AddRequest(GreedyRequest("n", std::vector<int32_t>(16, 5), 4)).code(), absl::StatusCode::kOk);

  EngineConfig bad = Config(0, 64);
  EXPECT_EQ(NewEngine(ModelDir(kShape), bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = Config(16, 64, /*budget=*/0);
  EXPECT_EQ(NewEngine(ModelDir(kShape), bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// 8. Stop strings on the bundled model.

TEST(LlmEngineTest, StopStringAcrossTokenBoundaryEndsGenerationAtOnce) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Tokenizer> tok, Tokenizer::Load(BundledModelDir()));
  const std::vector<int32_t> prompt = tok->Encode("ROMEO:\nWhat light is this", true);
  ASSERT_FALSE(prompt.empty());
  constexpr uint32_t kMaxTokens = 64;
  const EngineRequest request = GreedyRequest("s", prompt, kMaxTokens);

  // The plain greedy run and its text, piece by piece.
  ASSERT_OK_AND_ASSIGN(auto plain, testing::Generate(BundledModelDir(), {request}));
  const std::vector<int32_t> generated = plain.at("s").token_ids;
  ASSERT_EQ(generated.size(), kMaxTokens);
  IncrementalDecoder decoder(*tok, prompt);
  std::string text;
  std::vector<size_t> end_of;  // text length after each token
  for (int32_t id : generated) {
    text += decoder.Add(id);
    end_of.push_back(text.size());
  }
  // A 4-character ASCII string that straddles the boundary between tokens
  // i-1 and i (2 characters each side), first occurring there.
  std::string stop;
  size_t stop_at = 0, completing = 0;
  for (size_t i = 1; i + 1 < generated.size() && stop.empty(); ++i) {
    const size_t b = end_of[i - 1];
    if (b < 2 || end_of[i] < b + 2) continue;
    const std::string s = text.substr(b - 2, 4);
    if (std::any_of(s.begin(), s.end(), [](char ch) { return static_cast<unsigned char>(ch) >= 0x80; })) continue;
    if (text.find(s) == b - 2) {
      stop = s;
      stop_at = b - 2;
      completing = i;
    }
  }
  ASSERT_FALSE(stop.empty()) << "no boundary-crossing substring in: " << text;

  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(BundledModelDir(), Config(16, 64)));
  OutputProcessor processor(tok.get());
  ASSERT_TRUE(engine->AddRequest(request).ok());
  processor.Add("s", prompt, {stop, "never appears \x01"});
  std::string got;
  std::vector<int32_t> got_ids;
  FinishReason reason = FinishReason::kNone;
  int64_t outputs_after_finish = 0;
  while (engine->HasUnfinishedRequests()) {
    auto outs = engine->Step();
    ASSERT_TRUE(outs.ok()) << outs.status();
    for (const TextOutput& t : processor.Process(*engine, *outs)) {
      if (reason != FinishReason::kNone) ++outputs_after_finish;
      got += t.new_text;
      got_ids.insert(got_ids.end(), t.new_token_ids.begin(), t.new_token_ids.end());
      if (t.finished) reason = t.finish_reason;
    }
  }
  EXPECT_EQ(outputs_after_finish, 0);
  EXPECT_EQ(reason, FinishReason::kStop);
  EXPECT_EQ(got, text.substr(0, stop_at)) << "stop string '" << stop << "'";
  EXPECT_EQ(got_ids, std::vector<int32_t>(generated.begin(), generated.begin() + completing + 1));
  EXPECT_EQ(engine->Stats().num_steps, static_cast<int64_t>(completing) + 1);
  ExpectPoolEmpty(*engine);
}

// ---------------------------------------------------------------------------
// 9. Stats at chosen points.

TEST(LlmEngineTest, StatsAreExactThroughARun) {
  // Blocks of 4, a 32-block pool, 16 tokens per step.
  ASSERT_OK_AND_ASSIGN(auto engine, NewEngine(ModelDir(kShape), Config(4, 32, /*budget=*/16)));
  std::vector<int32_t> pa, pb, pc;
  for (int32_t i = 0; i < 10; ++i) pa.push_back(10 + i);
  for (int32_t i = 0; i < 5; ++i) pb.push_back(30 + i);
  for (int32_t i = 0; i < 3; ++i) pc.push_back(50 + i);
  ASSERT_TRUE(engine->AddRequest(GreedyRequest("a", pa, 4)).ok());
  ASSERT_TRUE(engine->AddRequest(GreedyRequest("b", pb, 4)).ok());
  ASSERT_TRUE(engine->AddRequest(GreedyRequest("c", pc, 4)).ok());

  struct Expect {
    int32_t running, waiting, used, cached;
    int64_t tokens;
    int32_t seqs;
    size_t outputs;
  };
  auto check = [&](const char* when, const Expect& e) {
    const EngineStats s = engine->Stats();
    EXPECT_EQ(s.num_running, e.running) << when;
    EXPECT_EQ(s.num_waiting, e.waiting) << when;
    EXPECT_EQ(s.kv.num_used_blocks, e.used) << when;
    EXPECT_EQ(s.kv.num_free_blocks, 32 - e.used) << when;
    EXPECT_EQ(s.kv.num_cached_blocks, e.cached) << when;
    EXPECT_EQ(s.last_step_num_tokens, e.tokens) << when;
    EXPECT_EQ(s.last_step_num_seqs, e.seqs) << when;
    EXPECT_EQ(s.kv.num_blocks, 32) << when;
  };
  check("before", {0, 3, 0, 0, 0, 0, 0});
  EXPECT_EQ(engine->Stats().num_steps, 0);
  auto step = [&](const char* when, const Expect& e) {
    auto outs = engine->Step();
    ASSERT_TRUE(outs.ok());
    EXPECT_EQ(outs->size(), e.outputs) << when;
    check(when, e);
  };
  // a 10 (3 blocks), b 5 (2), c 1 of 3 (1); a and b sample. Full blocks: a 2, b 1.
  step("step 1", {3, 0, 6, 3, 16, 3, 2});
  // a 1, b 1, c 2 (samples); no new block.
  step("step 2", {3, 0, 6, 3, 4, 3, 3});
  // a 12, b 7, c 4 computed: full blocks a 3, b 1, c 1.
  step("step 3", {3, 0, 6, 5, 3, 3, 3});
  // a and b finish (4 tokens); a took a 4th block first, c a 2nd.
  // Cached: a 3, b 2 (8 computed), c 1.
  step("step 4", {1, 0, 2, 6, 3, 3, 3});
  step("step 5", {0, 0, 0, 6, 1, 1, 1});
  EXPECT_EQ(engine->Stats().num_steps, 5);
  EXPECT_FALSE(engine->HasUnfinishedRequests());
  // An empty step changes nothing but the counters.
  step("idle", {0, 0, 0, 6, 0, 0, 0});
  EXPECT_EQ(engine->Stats().num_preemptions, 0);
  EXPECT_EQ(engine->Stats().kv.prefix_queries_requests, 3);
  ExpectPoolEmpty(*engine);
}

}  // namespace
}  // namespace tandem
