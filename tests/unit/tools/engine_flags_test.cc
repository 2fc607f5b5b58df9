// EngineFlags -> EngineConfig: the step budget's default (512, or 2048 when
// chunked prefill is off so whole prompts still fit), an explicit value
// kept, and out-of-range values refused with the field named.
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

}  // namespace
}  // namespace tandem::cli
