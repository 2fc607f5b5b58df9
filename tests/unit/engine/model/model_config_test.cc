// Tests for LoadModelConfig / ModelConfig::Validate: each supported
// architecture, each field and default, generation_config.json merging, and
// the errors (status code, file path and field in the message).
#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "engine/model/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/engine/model/test_files.h"

namespace tandem {
namespace {

using ::tandem::testing::FreshTestDir;
using ::tandem::testing::WriteFile;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;
namespace fs = std::filesystem;

// A small Llama config; tests patch fields in and out.
json TinyLlama() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 32000, "hidden_size": 256, "intermediate_size": 688,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 4096,
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"})");
}

class ModelConfigTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir(); }
  absl::StatusOr<ModelConfig> Load(const json& config) {
    WriteFile(dir_ / "config.json", config.dump(2));
    return LoadModelConfig(dir_);
  }
  std::string ConfigPath() const { return (dir_ / "config.json").string(); }
  fs::path dir_;
};

TEST_F(ModelConfigTest, ParsesLlama) {
  auto c = Load(TinyLlama());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->vocab_size, 32000);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->intermediate_size, 688);
  EXPECT_EQ(c->num_hidden_layers, 2);
  EXPECT_EQ(c->num_attention_heads, 8);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_THAT(c->bos_token_ids, ElementsAre(1));
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2));
  EXPECT_DOUBLE_EQ(c->generation.temperature, 1.0);
  EXPECT_FALSE(c->generation.do_sample);
}

TEST_F(ModelConfigTest, ParsesMistral) {
  json j = TinyLlama();
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 4096;
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "MistralForCausalLM");
  EXPECT_FALSE(c->attention_bias);
}

TEST_F(ModelConfigTest, ParsesQwen2WithBiasAndTiedEmbeddings) {
  json j = TinyLlama();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["tie_word_embeddings"] = true;
  j["bos_token_id"] = nullptr;
  j["eos_token_id"] = 151643;
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->bos_token_ids.empty());
  EXPECT_THAT(c->eos_token_ids, ElementsAre(151643));
}

TEST_F(ModelConfigTest, HonoursLlamaAttentionBias) {
  json j = TinyLlama();
  j["attention_bias"] = true;
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->o_proj_bias);
  EXPECT_FALSE(c->mlp_bias);
}

TEST_F(ModelConfigTest, HonoursLlamaMlpBias) {
  json j = TinyLlama();
  j["mlp_bias"] = true;
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->mlp_bias);
  EXPECT_FALSE(c->attention_bias);
}

TEST_F(ModelConfigTest, ReadsMistralSlidingWindow) {
  json j = TinyLlama();
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 4096;
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 4096);
  j["sliding_window"] = nullptr;
  c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 0);
}

TEST_F(ModelConfigTest, RejectsQwen2PerLayerSlidingWindow) {
  json j = TinyLlama();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["use_sliding_window"] = true;
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr("use_sliding_window"),
               HasSubstr("config.json"));
}

TEST_F(ModelConfigTest, PicksTheSupportedArchitectureFromTheList) {
  json j = TinyLlama();
  j["architectures"] = {"SomethingElse", "LlamaForCausalLM"};
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
}

TEST_F(ModelConfigTest, DefaultsKvHeadsHeadDimAndOptionalFields) {
  json j = TinyLlama();
  for (const char* f : {"num_key_value_heads", "rms_norm_eps", "rope_theta",
                        "max_position_embeddings", "bos_token_id", "eos_token_id"}) {
    j.erase(f);
  }
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_TRUE(c->bos_token_ids.empty());
  EXPECT_TRUE(c->eos_token_ids.empty());
}

TEST_F(ModelConfigTest, ReadsExplicitHeadDim) {
  json j = TinyLlama();
  j["head_dim"] = 64;  // Mistral-Nemo style: heads * head_dim != hidden_size
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 64);
}

TEST_F(ModelConfigTest, NullHeadDimMeansDefault) {
  json j = TinyLlama();
  j["head_dim"] = nullptr;
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 32);
}

TEST_F(ModelConfigTest, ParsesLlama3RopeScaling) {
  json j = TinyLlama();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
}

TEST_F(ModelConfigTest, ParsesLinearRopeScalingWithTypeKey) {
  json j = TinyLlama();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kLinear);
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 2.0);
}

TEST_F(ModelConfigTest, NullRopeScalingMeansNone) {
  json j = TinyLlama();
  j["rope_scaling"] = nullptr;
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScalingType::kNone);
}

TEST_F(ModelConfigTest, RejectsYarnRopeScaling) {
  json j = TinyLlama();
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("rope_scaling"), HasSubstr("unsupported rope_scaling type 'yarn'"));
}

TEST_F(ModelConfigTest, RejectsDynamicRopeScaling) {
  json j = TinyLlama();
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("unsupported rope_scaling type 'dynamic'"));
}

TEST_F(ModelConfigTest, RejectsLlama3RopeScalingWithoutFrequencyFactors) {
  json j = TinyLlama();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("low_freq_factor"));
}

TEST_F(ModelConfigTest, ReadsEosTokenList) {
  json j = TinyLlama();
  j["eos_token_id"] = {128001, 128008, 128009};
  auto c = Load(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128001, 128008, 128009));
}

TEST_F(ModelConfigTest, MergesGenerationConfig) {
  WriteFile(dir_ / "generation_config.json", R"({
    "bos_token_id": 1, "eos_token_id": [7, 2, 9, 7], "do_sample": true,
    "temperature": 0.6, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1,
    "transformers_version": "4.45.0"})");
  auto c = Load(TinyLlama());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->bos_token_ids, ElementsAre(1));
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2, 7, 9));  // config first, no duplicates
  EXPECT_TRUE(c->generation.do_sample);
  EXPECT_DOUBLE_EQ(c->generation.temperature, 0.6);
  EXPECT_DOUBLE_EQ(c->generation.top_p, 0.9);
  EXPECT_EQ(c->generation.top_k, 40);
  EXPECT_DOUBLE_EQ(c->generation.repetition_penalty, 1.1);
}

TEST_F(ModelConfigTest, GenerationConfigIntEosAndDefaults) {
  WriteFile(dir_ / "generation_config.json", R"({"eos_token_id": 5, "temperature": null})");
  auto c = Load(TinyLlama());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(2, 5));
  EXPECT_DOUBLE_EQ(c->generation.temperature, 1.0);
  EXPECT_DOUBLE_EQ(c->generation.top_p, 1.0);
  EXPECT_EQ(c->generation.top_k, 0);
  EXPECT_DOUBLE_EQ(c->generation.repetition_penalty, 1.0);
}

TEST_F(ModelConfigTest, RejectsBadGenerationConfig) {
  WriteFile(dir_ / "generation_config.json", R"({"top_p": 1.5})");
  EXPECT_ERROR(Load(TinyLlama()).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr((dir_ / "generation_config.json").string()), HasSubstr("top_p"));
}

TEST_F(ModelConfigTest, RejectsGenerationConfigThatIsNotJson) {
  WriteFile(dir_ / "generation_config.json", "{\"eos_token_id\": [1,");
  EXPECT_ERROR(Load(TinyLlama()).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr((dir_ / "generation_config.json").string()), HasSubstr("parse error"));
}

TEST_F(ModelConfigTest, RejectsUnsupportedArchitecture) {
  json j = TinyLlama();
  j["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("architectures"), HasSubstr("GPT2LMHeadModel"));
}

TEST_F(ModelConfigTest, RejectsMissingArchitectures) {
  json j = TinyLlama();
  j.erase("architectures");
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("'architectures'"), HasSubstr("missing"));
}

TEST_F(ModelConfigTest, RejectsEachMissingRequiredField) {
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size",
                            "num_hidden_layers", "num_attention_heads"}) {
    json j = TinyLlama();
    j.erase(field);
    EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
                 HasSubstr(std::string("'") + field + "'"), HasSubstr("missing"));
  }
}

TEST_F(ModelConfigTest, RejectsFieldOfWrongType) {
  json j = TinyLlama();
  j["hidden_size"] = "256";
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("'hidden_size'"), HasSubstr("integer"));
  j = TinyLlama();
  j["eos_token_id"] = {2, "x"};
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("'eos_token_id'"));
  j = TinyLlama();
  j["tie_word_embeddings"] = 1;
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("'tie_word_embeddings'"));
}

TEST_F(ModelConfigTest, RejectsUnsupportedActivation) {
  json j = TinyLlama();
  j["hidden_act"] = "gelu";
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("'hidden_act'"));
}

TEST_F(ModelConfigTest, RejectsHeadsNotDivisibleByKvHeads) {
  json j = TinyLlama();
  j["num_key_value_heads"] = 3;
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("num_key_value_heads"));
}

TEST_F(ModelConfigTest, RejectsHiddenSizeNotDivisibleByHeadsWithoutHeadDim) {
  json j = TinyLlama();
  j["hidden_size"] = 250;
  EXPECT_ERROR(Load(j).status(), absl::StatusCode::kInvalidArgument, HasSubstr(ConfigPath()),
               HasSubstr("'head_dim'"));
}

TEST_F(ModelConfigTest, MissingConfigIsNotFound) {
  EXPECT_ERROR(LoadModelConfig(dir_).status(), absl::StatusCode::kNotFound,
               HasSubstr(ConfigPath()));
}

TEST_F(ModelConfigTest, RejectsConfigThatIsNotJson) {
  WriteFile(dir_ / "config.json", "{\"hidden_size\": 12,,}");
  EXPECT_ERROR(LoadModelConfig(dir_).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr(ConfigPath()), HasSubstr("parse error"));
}

TEST(ModelConfigValidateTest, RejectsNonPositiveSizes) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  ModelConfig bad = c;
  bad.intermediate_size = 0;
  EXPECT_ERROR(bad.Validate(), absl::StatusCode::kInvalidArgument,
               HasSubstr("intermediate_size"));
  bad = c;
  bad.num_key_value_heads = 0;
  EXPECT_ERROR(bad.Validate(), absl::StatusCode::kInvalidArgument,
               HasSubstr("num_key_value_heads"));
  bad = c;
  bad.rms_norm_eps = 0;
  EXPECT_ERROR(bad.Validate(), absl::StatusCode::kInvalidArgument, HasSubstr("rms_norm_eps"));
  bad = c;
  bad.rope_scaling.type = RopeScalingType::kLlama3;
  bad.rope_scaling.high_freq_factor = bad.rope_scaling.low_freq_factor;
  EXPECT_ERROR(bad.Validate(), absl::StatusCode::kInvalidArgument,
               HasSubstr("high_freq_factor"));
}

// A value nested a million levels deep (a few MB of brackets) is refused
// before parsing: quoting it in the error used to recurse once per level
// and overflow the stack.
TEST_F(ModelConfigTest, DeeplyNestedValueIsAnErrorNotAStackOverflow) {
  const int depth = 1000000;
  WriteFile(dir_ / "config.json", "{\"architectures\": " + std::string(depth, '[') + std::string(depth, ']') + "}");
  EXPECT_ERROR(LoadModelConfig(dir_).status(), absl::StatusCode::kInvalidArgument,
               HasSubstr(ConfigPath()), HasSubstr("nested deeper than"));
}

}  // namespace
}  // namespace tandem
