// LlmEngine with each --quantization scheme (int8 W8A8, fp8 W8A16, int4
// W4A16) on the bundled model: a request alone gives the same greedy tokens
// as in a batch with other prompts (the quantized kernels are
// batch-invariant, so the engine is too), runs repeat exactly, the
// quantized model is really another model (its tokens are not the
// unquantized ones), the AVX2 path gives the same tokens as the best one,
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

class LlmEngineQuantizationTest : public ::testing::TestWithParam<Quantization> {
 protected:
  static EngineConfig QuantConfig() {
    EngineConfig c = WorkerEngineConfig(256);
    c.quantization.scheme = GetParam();
    return c;
  }
};

std::vector<EngineRequest> Requests() {
  std::vector<EngineRequest> out;
  const int lengths[] = {5, 19, 33, 48};
  for (int i = 0; i < 4; ++i) out.push_back(GreedyRequest(absl::StrCat("r", i), TestPrompt(lengths[i], i), kMaxTokens));
  return out;
}

TEST_P(LlmEngineQuantizationTest, RequestAloneEqualsRequestInBatch) {
  const std::vector<EngineRequest> requests = Requests();
  ASSERT_OK_AND_ASSIGN(auto batched, DirectTokens(requests, QuantConfig()));
  ASSERT_OK_AND_ASSIGN(auto again, DirectTokens(requests, QuantConfig()));
  EXPECT_EQ(batched, again);
  for (const EngineRequest& r : requests) {
    ASSERT_OK_AND_ASSIGN(auto alone, DirectTokens({r}, QuantConfig()));
    ASSERT_EQ(alone.at(r.request_id).size(), kMaxTokens);
    EXPECT_EQ(alone.at(r.request_id), batched.at(r.request_id)) << r.request_id;
  }
}

TEST_P(LlmEngineQuantizationTest, QuantizedTokensAreNotTheUnquantizedOnes) {
  // Deterministic: every path of each scheme gives the same bits, as does
  // every fp32 level, so the tokens of both models are fixed on any CPU.
  ASSERT_OK_AND_ASSIGN(auto quantized, DirectTokens(Requests(), QuantConfig()));
  ASSERT_OK_AND_ASSIGN(auto fp32, DirectTokens(Requests(), WorkerEngineConfig(256)));
  EXPECT_NE(quantized, fp32);
  // Still the same model, roughly: the first greedy token of most prompts agrees.
  int same_first = 0;
  for (const auto& [id, tokens] : quantized) same_first += tokens.front() == fp32.at(id).front();
  EXPECT_GE(same_first, 3);
}

TEST_P(LlmEngineQuantizationTest, Avx2PathGivesTheSameTokens) {
  ASSERT_OK_AND_ASSIGN(auto best, DirectTokens(Requests(), QuantConfig()));
  kernels::SetCpuIsa(kernels::CpuIsa::kAvx2);
  absl::StatusOr<std::map<std::string, std::vector<int32_t>>> avx2 = DirectTokens(Requests(), QuantConfig());
  kernels::SetCpuIsa(kernels::DetectedCpuIsa());
  ASSERT_TRUE(avx2.ok()) << avx2.status();
  EXPECT_EQ(*avx2, best);
}

TEST_P(LlmEngineQuantizationTest, TensorParallelRanksQuantizeTheirShards) {
  const EngineConfig config = QuantConfig();
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

INSTANTIATE_TEST_SUITE_P(Schemes, LlmEngineQuantizationTest,
                         ::testing::Values(Quantization::kInt8, Quantization::kFp8, Quantization::kInt4),
                         [](const ::testing::TestParamInfo<Quantization>& info) {
                           switch (info.param) {
                             case Quantization::kInt8:
                               return std::string("int8");
                             case Quantization::kFp8:
                               return std::string("fp8");
                             case Quantization::kInt4:
                               return std::string("int4");
                             case Quantization::kNone:
                               break;
                           }
                           return std::string("none");
                         });

}  // namespace
}  // namespace tandem
