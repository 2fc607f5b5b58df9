// LlmEngine with an int8 or fp8 KV cache (--kv-cache-dtype int8|fp8) on the
// bundled model: a request alone gives the same greedy tokens as in a batch
// with other prompts (the quantized attention is batch-invariant, and int8
// scales are per token, so no other request's K/V changes a row), runs
// repeat exactly, a prompt served from the prefix cache (blocks written by
// an earlier request, scales and all) gives the tokens it gives computed
// afresh, and the quantized cache is really in use (its tokens are not the
// fp32 cache's everywhere, yet close). fp8 reads a checkpoint's k_scale /
// v_scale tensors: the bundled model plus such a shard loads them, and with
// every scale 1.0 gives exactly the tokens of the default scales.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/core/llm_engine.h"
#include "engine/core/model_executor.h"
#include "gtest/gtest.h"
#include "tests/testing/assert_ok.h"
#include "engine/model/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/testing/engine_test_tools.h"
#include "tests/unit/engine/model/test_files.h"

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

// The tokens of `requests` on the model in `dir` with `config`.
std::map<std::string, std::vector<int32_t>> TokensOf(const std::filesystem::path& dir, const EngineConfig& config,
                                                     const std::vector<EngineRequest>& requests) {
  std::map<std::string, std::vector<int32_t>> out;
  absl::StatusOr<std::unique_ptr<ModelExecutor>> model = LoadExecutor(dir, 1);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return out;
  absl::StatusOr<std::unique_ptr<LlmEngine>> engine = LlmEngine::Create(*std::move(model), config);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return out;
  for (const EngineRequest& r : requests) EXPECT_TRUE((*engine)->AddRequest(r).ok());
  while ((*engine)->HasUnfinishedRequests()) {
    absl::StatusOr<std::vector<RequestOutput>> outs = (*engine)->Step();
    EXPECT_TRUE(outs.ok()) << outs.status();
    if (!outs.ok()) break;
    for (const RequestOutput& o : *outs) {
      out[o.request_id].insert(out[o.request_id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
    }
  }
  return out;
}

TEST(LlmEngineKvQuantCheckpointTest, Fp8ScalesFromTheCheckpointAreRead) {
  // The bundled model's config and weights, plus a second shard holding
  // k_scale (a scalar) and v_scale (one per KV head) for every layer, tied
  // together by an index as a sharded checkpoint would be.
  const std::filesystem::path src = BundledModelDir(), dir = testing::FreshTestDir();
  std::filesystem::copy_file(src / "config.json", dir / "config.json");
  std::filesystem::create_symlink(std::filesystem::absolute(src / "model.safetensors"), dir / "model.safetensors");
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<WeightStore> store, WeightStore::Open(src));
  nlohmann::json map;
  for (const std::string& name : store->Names()) map[name] = "model.safetensors";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<ModelExecutor> plain, LoadExecutor(src, 1));
  const ModelConfig& mc = plain->config();
  auto write_scales = [&](float value) {
    std::vector<testing::TensorSpec> scales;
    for (int64_t l = 0; l < mc.num_hidden_layers; ++l) {
      const std::string prefix = absl::StrCat("model.layers.", l, ".self_attn.");
      scales.push_back({prefix + "k_scale", "F32", {}, testing::Bytes(std::vector<float>{value})});
      scales.push_back({prefix + "v_scale", "F32", {mc.num_key_value_heads},
                        testing::Bytes(std::vector<float>(mc.num_key_value_heads, value))});
      map[prefix + "k_scale"] = map[prefix + "v_scale"] = "kv_scales.safetensors";
    }
    testing::WriteFile(dir / "kv_scales.safetensors", testing::BuildSafetensors(scales));
    testing::WriteFile(dir / "model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  };
  write_scales(1.0f);

  ASSERT_OK_AND_ASSIGN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(dir));
  EXPECT_TRUE(model->kv_cache_scales().from_checkpoint);
  EXPECT_EQ(model->kv_cache_scales().k.size(), static_cast<size_t>(mc.num_hidden_layers * mc.num_key_value_heads));
  EngineConfig config = WorkerEngineConfig(256);
  config.kv_dtype = DType::kF8E4M3;
  const auto from_file = TokensOf(dir, config, Requests());
  ASSERT_EQ(from_file.size(), Requests().size());
  const auto defaults = TokensOf(src, config, Requests());
  EXPECT_EQ(from_file, defaults);
  // Scales of 2^-10 saturate every |K|, |V| above 0.4375: the file's scales
  // are really the ones applied, so the tokens change.
  write_scales(0x1p-10f);
  EXPECT_NE(TokensOf(dir, config, Requests()), defaults);
}

INSTANTIATE_TEST_SUITE_P(KvDtypes, LlmEngineKvQuantTest, ::testing::Values(DType::kI8, DType::kF8E4M3),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return info.param == DType::kI8 ? std::string("Int8") : std::string("Fp8");
                         });

}  // namespace
}  // namespace tandem
