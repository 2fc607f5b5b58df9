// Tests for the CPU ISA dispatcher: names, the cap, and clamping to what the
// CPU has. Runs on any x86-64-v3 machine (what the CPU has decides the
// expectations, not the test).
#include <cstdlib>

#include "engine/kernels/ops.h"
#include "gtest/gtest.h"

namespace tandem::kernels {
namespace {

TEST(CpuIsaTest, NamesAreTheEnvSpellings) {
  EXPECT_EQ(CpuIsaName(CpuIsa::kAvx2), "avx2");
  EXPECT_EQ(CpuIsaName(CpuIsa::kAvx512), "avx512");
  EXPECT_EQ(CpuIsaName(CpuIsa::kAvx512Bf16), "avx512_bf16");
  EXPECT_EQ(CpuIsaName(CpuIsa::kAmx), "amx");
}

TEST(CpuIsaTest, ActiveNeverExceedsDetected) {
  EXPECT_LE(ActiveCpuIsa(), DetectedCpuIsa());
}

TEST(CpuIsaTest, SetCapsAndClamps) {
  const CpuIsa before = ActiveCpuIsa();
  EXPECT_EQ(SetCpuIsa(CpuIsa::kAvx2), CpuIsa::kAvx2);
  EXPECT_EQ(ActiveCpuIsa(), CpuIsa::kAvx2);
  // Asking for more than the CPU has gives what it has.
  EXPECT_EQ(SetCpuIsa(CpuIsa::kAmx), DetectedCpuIsa());
  EXPECT_EQ(ActiveCpuIsa(), DetectedCpuIsa());
  SetCpuIsa(before);
}

}  // namespace
}  // namespace tandem::kernels
