// The C++ Llama runtime against the independent float64 PyTorch reference
// (tests/reference/llama_reference.py), on every random-weight model shape
// that make_reference_fixtures.py writes into $TANDEM_TEST_WORK/reference.
//
// For each shape:
//  - logits: teacher-forced on the reference's tokens, every row within a
//    relative error of 1e-4 (max |c - r| / max |r|);
//  - greedy tokens: 32 tokens per prompt equal the reference's exactly;
//  - batch invariance: four prompts of different lengths in one batch give
//    bitwise the logits and exactly the tokens each gives alone.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "engine/core/llm_engine.h"
#include "engine/core/model_executor.h"
#include "engine/model/llama_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/engine_driver.h"

namespace tandem {
namespace {

constexpr double kLogitRelTol = 1e-4;  // fp32 arithmetic vs float64 reference
constexpr int64_t kBlockSize = 16;

struct RefCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> tokens;
  std::vector<std::vector<double>> logits;  // [tokens.size()][vocab]
  // The same rows with every linear input rounded to BF16 (--dtype bfloat16).
  std::vector<std::vector<double>> bf16_logits;
};

std::filesystem::path FixtureDir(const std::string& shape) {
  const char* work = std::getenv("TANDEM_TEST_WORK");
  return std::filesystem::path(work ? work : "build/test_work") / "reference" / shape;
}

std::vector<RefCase> LoadCases(const std::string& shape) {
  std::ifstream in(FixtureDir(shape) / "expected.json");
  EXPECT_TRUE(in.good()) << "missing fixture for " << shape << " (run the reference_fixtures test)";
  if (!in.good()) return {};
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<RefCase> cases;
  for (const auto& c : j["cases"]) {
    cases.push_back({c["prompt_token_ids"].get<std::vector<int32_t>>(),
                     c["token_ids"].get<std::vector<int32_t>>(),
                     c["logits"].get<std::vector<std::vector<double>>>(),
                     c["bf16_logits"].get<std::vector<std::vector<double>>>()});
  }
  return cases;
}

// Contiguous blocks for sequences of the given total lengths.
std::vector<std::vector<int32_t>> LayoutBlocks(const std::vector<int32_t>& lengths, int32_t* num_blocks) {
  std::vector<std::vector<int32_t>> tables;
  int32_t next = 0;
  for (int32_t len : lengths) {
    std::vector<int32_t> t;
    for (int32_t i = 0; i < (len + kBlockSize - 1) / kBlockSize; ++i) t.push_back(next++);
    tables.push_back(t);
  }
  *num_blocks = next;
  return tables;
}

// Appends positions [start, start+count) of `tokens` to the batch.
void AddSlice(ForwardBatch& b, const std::vector<int32_t>& tokens, const std::vector<int32_t>& table,
              int32_t start, int32_t count) {
  for (int32_t p = start; p < start + count; ++p) {
    b.token_ids.push_back(tokens[p]);
    b.positions.push_back(p);
    b.slot_mapping.push_back(table[p / kBlockSize] * kBlockSize + p % kBlockSize);
  }
  b.seqs.push_back({count, start + count, table});
  b.logit_indices.push_back(b.num_tokens() - 1);
}

// Teacher-forced logits for several sequences stepped together: one prefill
// step, then one token per sequence per step. Returns [seq][step][vocab].
// Teacher-forced logits through an executor (any tensor-parallel size).
std::vector<std::vector<std::vector<float>>> TeacherForcedLogits(ModelExecutor& model,
                                                                 const std::vector<RefCase>& cases,
                                                                 DType kv_dtype = DType::kF32);

std::vector<std::vector<std::vector<float>>> TeacherForcedLogits(LlamaModel& model,
                                                                 const std::vector<RefCase>& cases,
                                                                 DType kv_dtype = DType::kF32) {
  std::vector<int32_t> lengths;
  std::vector<std::vector<int32_t>> full;
  for (const RefCase& c : cases) {
    std::vector<int32_t> t = c.prompt;
    t.insert(t.end(), c.tokens.begin(), c.tokens.end());
    lengths.push_back(static_cast<int32_t>(t.size()));
    full.push_back(std::move(t));
  }
  int32_t num_blocks = 0;
  const auto tables = LayoutBlocks(lengths, &num_blocks);
  KvCache cache(model.MakeKvCacheShape(num_blocks, kBlockSize, kv_dtype));
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::vector<std::vector<float>>> out(cases.size());
  const size_t steps = cases[0].tokens.size();
  for (size_t step = 0; step < steps; ++step) {
    ForwardBatch b;
    for (size_t s = 0; s < cases.size(); ++s) {
      const int32_t plen = static_cast<int32_t>(cases[s].prompt.size());
      if (step == 0) {
        AddSlice(b, full[s], tables[s], 0, plen);
      } else {
        AddSlice(b, full[s], tables[s], plen + static_cast<int32_t>(step) - 1, 1);
      }
    }
    auto logits = model.Forward(b, cache);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return {};
    for (size_t s = 0; s < cases.size(); ++s) {
      out[s].emplace_back(logits->begin() + s * vocab, logits->begin() + (s + 1) * vocab);
    }
  }
  return out;
}

// max |c - r| / max |r| over one logits row.
double RelativeError(const std::vector<float>& c, const std::vector<double>& r) {
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t v = 0; v < r.size(); ++v) {
    max_diff = std::max(max_diff, std::abs(c[v] - r[v]));
    max_ref = std::max(max_ref, std::abs(r[v]));
  }
  return max_diff / max_ref;
}

std::vector<std::vector<std::vector<float>>> TeacherForcedLogits(ModelExecutor& model,
                                                                 const std::vector<RefCase>& cases, DType kv_dtype) {
  std::vector<int32_t> lengths;
  std::vector<std::vector<int32_t>> full;
  for (const RefCase& c : cases) {
    std::vector<int32_t> t = c.prompt;
    t.insert(t.end(), c.tokens.begin(), c.tokens.end());
    lengths.push_back(static_cast<int32_t>(t.size()));
    full.push_back(std::move(t));
  }
  int32_t num_blocks = 0;
  const auto tables = LayoutBlocks(lengths, &num_blocks);
  model.AllocateKvCaches(num_blocks, kBlockSize, kv_dtype);
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::vector<std::vector<float>>> out(cases.size());
  for (size_t step = 0; step < cases[0].tokens.size(); ++step) {
    ForwardBatch b;
    for (size_t s = 0; s < cases.size(); ++s) {
      const int32_t plen = static_cast<int32_t>(cases[s].prompt.size());
      AddSlice(b, full[s], tables[s], step == 0 ? 0 : plen + static_cast<int32_t>(step) - 1,
               step == 0 ? plen : 1);
    }
    auto logits = model.Forward(b, nullptr);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return {};
    for (size_t s = 0; s < cases.size(); ++s) {
      out[s].emplace_back(logits->begin() + s * vocab, logits->begin() + (s + 1) * vocab);
    }
  }
  return out;
}

class ReferenceParityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    cases_ = LoadCases(GetParam());
    ASSERT_EQ(cases_.size(), 4u);
    auto model = LlamaModel::Load(FixtureDir(GetParam()) / "model");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }
  std::vector<RefCase> cases_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_P(ReferenceParityTest, LogitsMatchFloat64Reference) {
  double worst = 0.0;
  for (const RefCase& c : cases_) {
    auto logits = TeacherForcedLogits(*model_, {c});
    ASSERT_EQ(logits.size(), 1u);
    ASSERT_EQ(logits[0].size(), c.logits.size());
    for (size_t step = 0; step < c.logits.size(); ++step) {
      const double err = RelativeError(logits[0][step], c.logits[step]);
      worst = std::max(worst, err);
      ASSERT_LE(err, kLogitRelTol) << "prompt length " << c.prompt.size() << " step " << step;
    }
  }
  RecordProperty("worst_relative_error", std::to_string(worst));
}

// 16-bit KV storage rounds K and V once; logits stay within the rounding's
// reach of the reference (bf16 keeps 8 mantissa bits, fp16 11).
TEST_P(ReferenceParityTest, SixteenBitKvCacheStaysCloseToReference) {
  for (auto [dtype, tol] : {std::pair{DType::kBF16, 3e-2}, std::pair{DType::kF16, 4e-3}}) {
    double worst = 0.0;
    for (const RefCase& c : cases_) {
      auto logits = TeacherForcedLogits(*model_, {c}, dtype);
      ASSERT_EQ(logits.size(), 1u);
      for (size_t step = 0; step < c.logits.size(); ++step) {
        worst = std::max(worst, RelativeError(logits[0][step], c.logits[step]));
      }
    }
    EXPECT_LE(worst, tol) << DTypeName(dtype);
    EXPECT_GT(worst, 0.0) << DTypeName(dtype) << " storage should round something";
    std::printf("%s KV: worst relative logit error %.3g\n", std::string(DTypeName(dtype)).c_str(), worst);
  }
}

// --dtype bfloat16: the reference with the same BF16 rounding of every linear
// input. It cannot be matched as tightly as fp32: an activation whose fp32
// value (off the float64 one by ~1e-5 relative after a few layers) lies on
// the other side of a BF16 rounding boundary rounds one BF16 step (2^-8) the
// other way, and these random-weight models amplify such steps (measured on
// 11 shapes: 2.1e-3..5.1e-3 from the BF16 reference, 7.3e-3..2.3e-2 from the
// unrounded one). So: within 1e-2, always closer to the BF16 reference than
// to the unrounded one, and batched steps give bitwise the logits of each
// sequence alone, as in fp32. The kernel itself is checked tightly (against
// float64 of the rounded inputs) in tests/unit/kernels/matmul_bf16_test.cc.
constexpr double kBf16LogitRelTol = 1e-2;

TEST_P(ReferenceParityTest, Bf16MatMulsMatchTheBf16Reference) {
  auto loaded = LlamaModel::Load(FixtureDir(GetParam()) / "model", {}, nullptr, kernels::MatMulPrecision::kBf16);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  LlamaModel& model = **loaded;
  double worst = 0.0, worst_vs_fp32 = 0.0;
  for (const RefCase& c : cases_) {
    const auto logits = TeacherForcedLogits(model, {c});
    ASSERT_EQ(logits.size(), 1u);
    ASSERT_EQ(logits[0].size(), c.bf16_logits.size());
    for (size_t step = 0; step < c.bf16_logits.size(); ++step) {
      worst = std::max(worst, RelativeError(logits[0][step], c.bf16_logits[step]));
      worst_vs_fp32 = std::max(worst_vs_fp32, RelativeError(logits[0][step], c.logits[step]));
    }
  }
  EXPECT_LE(worst, kBf16LogitRelTol);
  EXPECT_LT(worst, worst_vs_fp32) << "the engine should be closer to the BF16-rounded reference";
  std::printf("bf16 matmuls: worst relative logit error %.3g (vs the unrounded reference %.3g)\n", worst,
              worst_vs_fp32);
  const auto batched = TeacherForcedLogits(model, cases_);
  ASSERT_EQ(batched.size(), cases_.size());
  for (size_t s = 0; s < cases_.size(); ++s) {
    EXPECT_EQ(batched[s], TeacherForcedLogits(model, {cases_[s]})[0]) << "sequence " << s;
  }
}

TEST_P(ReferenceParityTest, GreedyTokensMatchReference) {
  for (size_t i = 0; i < cases_.size(); ++i) {
    const RefCase& c = cases_[i];
    auto results = testing::Generate(FixtureDir(GetParam()) / "model",
                                     {testing::GreedyRequest("r", c.prompt, c.tokens.size())});
    ASSERT_TRUE(results.ok()) << results.status();
    EXPECT_EQ(results->at("r").token_ids, c.tokens) << "prompt length " << c.prompt.size();
  }
}

TEST_P(ReferenceParityTest, BatchOfFourEqualsEachAlone) {
  // Logits: bitwise equal, batched vs alone.
  const auto batched = TeacherForcedLogits(*model_, cases_);
  ASSERT_EQ(batched.size(), cases_.size());
  for (size_t s = 0; s < cases_.size(); ++s) {
    const auto alone = TeacherForcedLogits(*model_, {cases_[s]});
    ASSERT_EQ(alone.size(), 1u);
    EXPECT_EQ(batched[s], alone[0]) << "sequence " << s;
  }
  // Tokens: generated together through the engine equal the reference's.
  std::vector<EngineRequest> requests;
  for (size_t s = 0; s < cases_.size(); ++s) {
    requests.push_back(testing::GreedyRequest("r" + std::to_string(s), cases_[s].prompt, cases_[s].tokens.size()));
  }
  auto together = testing::Generate(FixtureDir(GetParam()) / "model", requests);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t s = 0; s < requests.size(); ++s) {
    EXPECT_EQ(together->at(requests[s].request_id).token_ids, cases_[s].tokens) << "sequence " << s;
  }
}

// Tensor parallelism (ranks as threads): logits within the same fp32 bound
// of the float64 reference (only the reduction order changes) and exactly the
// reference's greedy tokens, for TP = 2 and 4 wherever the shape splits;
// where it does not, a clear InvalidArgument naming what cannot be split.
TEST_P(ReferenceParityTest, TensorParallelMatchesReference) {
  const auto dir = FixtureDir(GetParam()) / "model";
  const ModelConfig& c = model_->config();
  for (int tp : {2, 4}) {
    auto executor = LoadExecutor(dir, tp);
    const bool splits = c.num_attention_heads % tp == 0 && c.intermediate_size % tp == 0 &&
                        (c.num_key_value_heads % tp == 0 || tp % c.num_key_value_heads == 0);
    if (!splits) {
      ASSERT_FALSE(executor.ok()) << "tp " << tp;
      EXPECT_EQ(executor.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(executor.status().message().find("cannot split"), std::string::npos) << executor.status();
      continue;
    }
    ASSERT_TRUE(executor.ok()) << "tp " << tp << ": " << executor.status();
    double worst = 0.0;
    for (const RefCase& rc : cases_) {
      const auto logits = TeacherForcedLogits(**executor, {rc});
      ASSERT_EQ(logits.size(), 1u);
      for (size_t step = 0; step < rc.logits.size(); ++step) {
        worst = std::max(worst, RelativeError(logits[0][step], rc.logits[step]));
      }
    }
    EXPECT_LE(worst, kLogitRelTol) << "tp " << tp;
    // Greedy tokens through the engine, all four prompts batched.
    auto engine_executor = LoadExecutor(dir, tp);
    ASSERT_TRUE(engine_executor.ok());
    auto engine = LlmEngine::Create(*std::move(engine_executor), testing::TestEngineConfig());
    ASSERT_TRUE(engine.ok()) << engine.status();
    for (size_t s = 0; s < cases_.size(); ++s) {
      ASSERT_TRUE((*engine)->AddRequest(testing::GreedyRequest("r" + std::to_string(s), cases_[s].prompt,
                                                               cases_[s].tokens.size())).ok());
    }
    auto results = testing::RunToCompletion(**engine);
    ASSERT_TRUE(results.ok()) << results.status();
    for (size_t s = 0; s < cases_.size(); ++s) {
      EXPECT_EQ(results->at("r" + std::to_string(s)).token_ids, cases_[s].tokens) << "tp " << tp << " case " << s;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ReferenceParityTest,
                         ::testing::Values("llama_mha_f32", "llama_gqa_f32", "llama_head_dim_f32",
                                           "qwen2_bias_f32", "llama3_rope_f32", "linear_rope_f32",
                                           "mistral_f16", "llama_bf16", "sharded_f32",
                                           "llama_bias_f32", "mistral_window_f32"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
