// LlmEngine with --quantization fp8 (W8A16: FP8 E4M3 weights, fp32
// activations) on the bundled model: a request alone gives the same greedy
// tokens as in a batch with other prompts (the fp8 kernels are
// batch-invariant, so the engine is too), runs repeat exactly, the quantized
// model is really another model (its tokens are not the unquantized ones),
// and tensor parallelism still runs with each rank quantizing its own shard.
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
using testing::GreedyRequest;
using testing::DirectTokens;
using testing::TestPrompt;
using testing::WorkerEngineConfig;

constexpr uint32_t kMaxTokens = 24;

EngineConfig Fp8Config() {
  EngineConfig c = WorkerEngineConfig(256);
  c.quantization.scheme = Quantization::kFp8;
  return c;
}

std::vector<EngineRequest> Requests() {
  std::vector<EngineRequest> out;
  const int lengths[] = {5, 19, 33, 48};
  for (int i = 0; i < 4; ++i) out.push_back(GreedyRequest(absl::StrCat("r", i), TestPrompt(lengths[i], i), kMaxTokens));
  return out;
}

TEST(LlmEngineFp8Test, RequestAloneEqualsRequestInBatch) {
  const std::vector<EngineRequest> requests = Requests();
  ASSERT_OK_AND_ASSIGN(auto batched, DirectTokens(requests, Fp8Config()));
  ASSERT_OK_AND_ASSIGN(auto again, DirectTokens(requests, Fp8Config()));
  EXPECT_EQ(batched, again);
  for (const EngineRequest& r : requests) {
    ASSERT_OK_AND_ASSIGN(auto alone, DirectTokens({r}, Fp8Config()));
    ASSERT_EQ(alone.at(r.request_id).size(), kMaxTokens);
    EXPECT_EQ(alone.at(r.request_id), batched.at(r.request_id)) << r.request_id;
  }
}

TEST(LlmEngineFp8Test, QuantizedTokensAreNotTheUnquantizedOnes) {
  // Deterministic: every fp8 path gives the same bits, as does every fp32
  // level, so the tokens of both models are fixed on any CPU.
  ASSERT_OK_AND_ASSIGN(auto fp8, DirectTokens(Requests(), Fp8Config()));
  ASSERT_OK_AND_ASSIGN(auto fp32, DirectTokens(Requests(), WorkerEngineConfig(256)));
  EXPECT_NE(fp8, fp32);
  // Still the same model, roughly: the first greedy token of most prompts agrees.
  int same_first = 0;
  for (const auto& [id, tokens] : fp8) same_first += tokens.front() == fp32.at(id).front();
  EXPECT_GE(same_first, 3);
}

TEST(LlmEngineFp8Test, TensorParallelRanksQuantizeTheirShards) {
  const EngineConfig config = Fp8Config();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ModelExecutor> model,
                       LoadExecutor(BundledModelDir(), 2, config.precision, config.quantization));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(model), config));
  for (const EngineRequest& r : Requests()) ASSERT_TRUE(engine->AddRequest(r).ok());
  std::map<std::string, std::vector<int32_t>> tp2;
  while (engine->HasUnfinishedRequests()) {
    ASSERT_OK_AND_ASSIGN(std::vector<RequestOutput> outs, engine->Step());
    for (const RequestOutput& o : outs) {
      tp2[o.request_id].insert(tp2[o.request_id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
    }
  }
  // Row-parallel layers quantize a column slice per rank (other scales than
  // one rank's), so tokens may drift late; the first ones agree.
  ASSERT_OK_AND_ASSIGN(auto tp1, DirectTokens(Requests(), config));
  for (const auto& [id, tokens] : tp1) {
    ASSERT_EQ(tp2.at(id).size(), kMaxTokens);
    EXPECT_EQ(tp2.at(id).front(), tokens.front()) << id;
  }
}

}  // namespace
}  // namespace tandem
