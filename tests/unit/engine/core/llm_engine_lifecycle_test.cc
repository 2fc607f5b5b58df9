// LlmEngine request lifecycle outside the plain run-to-completion path:
// Abort in every state (waiting, mid chunked prefill, decoding, prefilled,
// awaiting external KV) frees every block at once; disaggregation (prefill in
// engine A, KV copied, decode in engine B) equals a single engine, with exact
// errors for ReserveExternal / ActivateExternal / PrefilledBlocks /
// ReleasePrefilled, and reservations that respect continuous batching's
// promised blocks. Helpers and fixtures: llm_engine_test_util.h.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "engine/core/llm_engine.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/llm_engine_test_util.h"

namespace tandem {
namespace {

using namespace llm_engine_test;  // NOLINT(build/namespaces): the shared helpers

// ---------------------------------------------------------------------------
// WarmUp: a throwaway step that changes nothing a request can see.

TEST(LlmEngineTest, WarmUpChangesNoTokenNoBlockAndNoCounter) {
  EngineConfig config = Config(4, 32, /*budget=*/48);
  std::mt19937 rng(21);
  const EngineRequest a = GreedyRequest("a", RandomPrompt(rng, 11, 320), 9);
  const EngineRequest b = GreedyRequest("b", RandomPrompt(rng, 30, 320), 7);
  ASSERT_OK_AND_ASSIGN(auto cold, NewEngine(ModelDir(kShape), config));
  ASSERT_OK_AND_ASSIGN(auto warm, NewEngine(ModelDir(kShape), config));
  auto nonzero_bytes = [](LlmEngine& e) {
    const std::span<uint8_t> m = e.kv_cache(0).Memory();
    return std::count_if(m.begin(), m.end(), [](uint8_t v) { return v != 0; });
  };
  ASSERT_EQ(nonzero_bytes(*warm), 0);
  ASSERT_TRUE(warm->WarmUp().ok());
  EXPECT_GT(nonzero_bytes(*warm), 0) << "the warm-up step ran and wrote its KV";
  const EngineStats s = warm->Stats();
  EXPECT_EQ(s.num_steps, 0);
  EXPECT_EQ(s.kv.num_used_blocks, 0);
  EXPECT_EQ(s.kv.num_free_blocks, 32);
  for (LlmEngine* e : {cold.get(), warm.get()}) {
    ASSERT_TRUE(e->AddRequest(a).ok());
    ASSERT_TRUE(e->AddRequest(b).ok());
  }
  // The warm-up wrote KV into blocks 0..11 (48 tokens of 4); the requests
  // get those blocks and must read only what they wrote themselves.
  const Trace want = Drive(*cold), got = Drive(*warm);
  ASSERT_EQ(got.results.count("a"), 1u);
  ASSERT_EQ(got.results.count("b"), 1u);
  EXPECT_EQ(got.results.at("a").token_ids, want.results.at("a").token_ids);
  EXPECT_EQ(got.results.at("b").token_ids, want.results.at("b").token_ids);
  ExpectPoolEmpty(*warm);
  EXPECT_EQ(warm->WarmUp().code(), absl::StatusCode::kOk);  // idle again: allowed
  ASSERT_TRUE(warm->AddRequest(GreedyRequest("c", RandomPrompt(rng, 5, 320), 3)).ok());
  EXPECT_EQ(warm->WarmUp().code(), absl::StatusCode::kFailedPrecondition);
}

// ---------------------------------------------------------------------------
// Abort frees every block at once, in any state.

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
// Disaggregation: prefill in engine A, decode in engine B.

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

}  // namespace
}  // namespace tandem
