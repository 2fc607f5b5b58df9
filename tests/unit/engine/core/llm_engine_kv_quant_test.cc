// LlmEngine with an int8 or fp8 KV cache (--kv-cache-dtype int8|fp8) on the
// bundled model: a request alone gives the same greedy tokens as in a batch
// with other prompts (the quantized attention is batch-invariant, and int8
// scales are per token, so no other request's K/V changes a row), runs
// repeat exactly, a prompt served from the prefix cache (blocks written by
// an earlier request, scales and all) gives the tokens it gives computed
// afresh, and the quantized cache is really in use (its tokens are not the
// fp32 cache's everywhere, yet close).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/llm_engine.h"
#include "engine/core/model_executor.h"
#include "gtest/gtest.h"
#include "tests/testing/assert_ok.h"
#include "tests/testing/engine_test_tools.h"

namespace tandem {
namespace {

using testing::BundledModelDir;
using testing::DirectTokens;
using testing::GreedyRequest;
using testing::TestPrompt;
using testing::WorkerEngineConfig;

constexpr uint32_t kMaxTokens = 24;

class LlmEngineKvQuantTest : public ::testing::TestWithParam<DType> {
 protected:
  EngineConfig Config() const {
    EngineConfig c = WorkerEngineConfig(256);
    c.kv_dtype = GetParam();
    return c;
  }
};

std::vector<EngineRequest> Requests() {
  std::vector<EngineRequest> out;
  const int lengths[] = {5, 19, 33, 48};
  for (int i = 0; i < 4; ++i) out.push_back(GreedyRequest(absl::StrCat("r", i), TestPrompt(lengths[i], i), kMaxTokens));
  return out;
}

TEST_P(LlmEngineKvQuantTest, RequestAloneEqualsRequestInBatch) {
  const std::vector<EngineRequest> requests = Requests();
  ASSERT_OK_AND_ASSIGN(auto batched, DirectTokens(requests, Config()));
  ASSERT_OK_AND_ASSIGN(auto again, DirectTokens(requests, Config()));
  EXPECT_EQ(batched, again);
  for (const EngineRequest& r : requests) {
    ASSERT_OK_AND_ASSIGN(auto alone, DirectTokens({r}, Config()));
    ASSERT_EQ(alone.at(r.request_id).size(), kMaxTokens);
    EXPECT_EQ(alone.at(r.request_id), batched.at(r.request_id)) << r.request_id;
  }
}

TEST_P(LlmEngineKvQuantTest, PrefixCacheHitGivesTheFreshTokens) {
  // Two 40-token prompts sharing their first 32 tokens (two full blocks):
  // the second runs after the first finished, so its prefix comes from the
  // cache, written (and quantized) by the first.
  std::vector<int32_t> shared = TestPrompt(40, 3);
  std::vector<int32_t> other = shared;
  for (size_t i = 32; i < other.size(); ++i) other[i] = 100 + static_cast<int32_t>(i) * 11;
  const EngineRequest first = GreedyRequest("first", shared, kMaxTokens);
  const EngineRequest second = GreedyRequest("second", other, kMaxTokens);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ModelExecutor> model, LoadExecutor(BundledModelDir(), 1));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(model), Config()));
  std::map<std::string, std::vector<int32_t>> cached;
  for (const EngineRequest& r : {first, second}) {
    ASSERT_TRUE(engine->AddRequest(r).ok());
    while (engine->HasUnfinishedRequests()) {
      ASSERT_OK_AND_ASSIGN(std::vector<RequestOutput> outs, engine->Step());
      for (const RequestOutput& o : outs) {
        cached[o.request_id].insert(cached[o.request_id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
      }
    }
  }
  EXPECT_GE(engine->Stats().kv.prefix_hits_tokens, 32);
  ASSERT_OK_AND_ASSIGN(auto fresh, DirectTokens({second}, Config()));
  EXPECT_EQ(cached.at("second"), fresh.at("second"));
}

TEST_P(LlmEngineKvQuantTest, FirstTokensAgreeWithTheFp32Cache) {
  ASSERT_OK_AND_ASSIGN(auto quantized, DirectTokens(Requests(), Config()));
  ASSERT_OK_AND_ASSIGN(auto fp32, DirectTokens(Requests(), WorkerEngineConfig(256)));
  // The first greedy token of every prompt agrees: the cache's error is small.
  for (const auto& [id, tokens] : quantized) EXPECT_EQ(tokens.front(), fp32.at(id).front()) << id;
}

INSTANTIATE_TEST_SUITE_P(KvDtypes, LlmEngineKvQuantTest, ::testing::Values(DType::kI8, DType::kF8E4M3),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return info.param == DType::kI8 ? std::string("Int8") : std::string("Fp8");
                         });

}  // namespace
}  // namespace tandem
