// LlmEngine: request validation (exact status codes and messages for bad
// prompts, ids, sampling fields, pool / context / chunking limits and engine
// configs) and exact EngineStats after each step of a small run.
// Helpers and fixtures: llm_engine_test_util.h.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/core/llm_engine.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/llm_engine_test_util.h"

namespace tandem {
namespace {

using namespace llm_engine_test;  // NOLINT(build/namespaces): the shared helpers

// ---------------------------------------------------------------------------
// Validation errors.

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
// Stats at chosen points.

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
