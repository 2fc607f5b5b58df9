// LlmEngine: sampling parameters end to end (top_k 1 equals greedy,
// max_tokens, stop token ids, eos with and without ignore_eos), logprobs
// against a float64 log-softmax of the model's own logits, and stop strings
// that straddle a token boundary (bundled tandem-shakespeare model).
// Helpers and fixtures: llm_engine_test_util.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/llm_engine.h"
#include "engine/core/output_processor.h"
#include "engine/model/llama_model.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/unit/engine/core/llm_engine_test_util.h"

namespace tandem {
namespace {

using namespace llm_engine_test;  // NOLINT(build/namespaces): the shared helpers

// ---------------------------------------------------------------------------
// Sampling parameters end to end.

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
// Stop strings on the bundled model.

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

}  // namespace
}  // namespace tandem
