// EngineFlags -> EngineConfig: the step budget's default (512, or 2048 when
// chunked prefill is off so whole prompts still fit), an explicit value
// kept, and out-of-range values refused with the field named; --quantization
// int4 reaching the config and an unknown scheme refused naming the choices.
#include "worker/engine_flags.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "common/cli/cli_flags.h"

namespace tandem::cli {
namespace {

absl::StatusOr<EngineConfig> Parse(const std::vector<std::string>& args) {
  EngineFlags e;
  FlagSet flags;
  e.Register(flags);
  if (absl::Status st = flags.Parse(args); !st.ok()) return st;
  return e.ToConfig(1);
}

TEST(EngineFlagsTest, StepBudgetDefaultsTo512Or2048WithoutChunking) {
  auto c = Parse({});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->scheduler.max_num_batched_tokens, 512);
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

}  // namespace
}  // namespace tandem::cli
