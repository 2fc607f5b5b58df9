// EngineFlags -> EngineConfig: the step budget's default (256, or 2048 when
// chunked prefill is off so whole prompts still fit), an explicit value
// kept, and out-of-range values refused with the field named; --quantization
// int4 reaching the config and an unknown scheme refused naming the choices;
// --dtype auto / --kv-cache-dtype auto (the defaults) resolved from the
// checkpoint's embedding dtype and the CPU level, explicit values winning.
#include "worker/engine_flags.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "common/cli/cli_flags.h"
#include "engine/model/auto_dtype.h"
#include "engine/model/safetensors_writer.h"

namespace tandem::cli {
namespace {

// A directory holding only an embedding table of `dtype` (all auto needs).
std::filesystem::path CheckpointOf(DType dtype) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("engine_flags_test_" + std::to_string(getpid()) + "_" +
                                     std::string(DTypeName(dtype)));
  std::filesystem::create_directories(dir);
  // A config.json the loader accepts (auto checks it first); the shapes are not read.
  std::ofstream(dir / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 4, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
    "rms_norm_eps": 1e-05, "tie_word_embeddings": true})";
  const std::string bytes(4 * 8 * DTypeSize(dtype), '\0');
  EXPECT_TRUE(WriteSafetensors(dir / "model.safetensors", {{"model.embed_tokens.weight", dtype, {4, 8}, bytes}}).ok());
  return dir;
}

absl::StatusOr<EngineConfig> Parse(const std::vector<std::string>& args,
                                   const std::filesystem::path& model_dir = CheckpointOf(DType::kF32)) {
  EngineFlags e;
  FlagSet flags;
  e.Register(flags);
  if (absl::Status st = flags.Parse(args); !st.ok()) return st;
  return e.ToConfig(1, model_dir);
}

TEST(EngineFlagsTest, StepBudgetDefaultsTo256Or2048WithoutChunking) {
  auto c = Parse({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->scheduler.max_num_batched_tokens, 256);
  EXPECT_TRUE(c->scheduler.enable_chunked_prefill);
  c = Parse({"--no-chunked-prefill"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->scheduler.max_num_batched_tokens, 2048);
  EXPECT_FALSE(c->scheduler.enable_chunked_prefill);
  c = Parse({"--max-num-batched-tokens", "64", "--no-chunked-prefill"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->scheduler.max_num_batched_tokens, 64);
}

TEST(EngineFlagsTest, ZeroOrNegativeBudgetIsRefused) {
  for (const std::string v : {"0", "-5"}) {
    const auto c = Parse({"--max-num-batched-tokens", v});
    ASSERT_FALSE(c.ok()) << v;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << v;
    EXPECT_NE(std::string(c.status().message()).find("max_num_batched_tokens"), std::string::npos) << c.status();
  }
}

TEST(EngineFlagsTest, QuantizationInt4ReachesTheConfig) {
  absl::StatusOr<EngineConfig> c = Parse({"--quantization", "int4"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->quantization.scheme, Quantization::kInt4);
  const absl::Status bad = Parse({"--quantization", "int3"}).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("--quantization 'int3'"), std::string::npos) << bad;
  EXPECT_NE(bad.message().find("int4"), std::string::npos) << bad;
}

// Restores the CPU level a test capped.
class IsaCap {
 public:
  explicit IsaCap(kernels::CpuIsa isa) : saved_(kernels::ActiveCpuIsa()) { kernels::SetCpuIsa(isa); }
  ~IsaCap() { kernels::SetCpuIsa(saved_); }

 private:
  kernels::CpuIsa saved_;
};

TEST(EngineFlagsTest, AutoDtypesFollowTheCheckpointAndTheCpu) {
  const std::filesystem::path bf16 = CheckpointOf(DType::kBF16);
  {
    IsaCap cap(kernels::CpuIsa::kAvx512);  // no BF16 dot products: fp32 arithmetic, BF16 KV
    auto c = Parse({}, bf16);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->precision, kernels::MatMulPrecision::kF32);
    EXPECT_EQ(c->kv_dtype, DType::kBF16);
  }
  // BF16 arithmetic exactly where it is the faster one on this CPU.
  EXPECT_EQ(AutoMatMulPrecision(DType::kBF16, true), kernels::MatMulPrecision::kBf16);
  EXPECT_EQ(AutoMatMulPrecision(DType::kBF16, false), kernels::MatMulPrecision::kF32);
  if (kernels::Bf16MatMulIsFast()) {
    auto c = Parse({}, bf16);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->precision, kernels::MatMulPrecision::kBf16);
    EXPECT_EQ(c->kv_dtype, DType::kBF16);
    c = Parse({"--dtype", "float32", "--kv-cache-dtype", "fp32"}, bf16);  // explicit values win
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->precision, kernels::MatMulPrecision::kF32);
    EXPECT_EQ(c->kv_dtype, DType::kF32);
  } else {
    std::printf("BF16 matmuls are not faster on this CPU: auto's bfloat16 branch is not exercised here\n");
  }
  for (auto [file, kv] : {std::pair{DType::kF32, DType::kF32}, std::pair{DType::kF16, DType::kF16}}) {
    EXPECT_EQ(AutoMatMulPrecision(file, true), kernels::MatMulPrecision::kF32);
    auto c = Parse({}, CheckpointOf(file));  // F32 / F16 weights keep fp32 arithmetic on every CPU
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->precision, kernels::MatMulPrecision::kF32);
    EXPECT_EQ(c->kv_dtype, kv);
  }
  std::filesystem::remove_all(bf16);
}

TEST(EngineFlagsTest, AutoWithoutACheckpointIsAnErrorExplicitDtypesNeedNone) {
  const std::filesystem::path missing = std::filesystem::temp_directory_path() / "engine_flags_test_no_such_dir";
  EXPECT_FALSE(Parse({}, missing).ok());
  auto c = Parse({"--dtype", "bfloat16", "--kv-cache-dtype", "int8"}, missing);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->precision, kernels::MatMulPrecision::kBf16);
  EXPECT_EQ(c->kv_dtype, DType::kI8);
  const absl::Status bad = Parse({"--dtype", "half"}).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("auto, float32 or bfloat16"), std::string::npos) << bad;
}

}  // namespace
}  // namespace tandem::cli
