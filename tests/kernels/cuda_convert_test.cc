// CUDA parity: device dtype conversion equals the CPU kernel bit for bit.
// Skips cleanly where no CUDA device answers.
#include <cstring>
#include <vector>

#include "engine/kernels/cuda/cuda_backend.h"
#include "engine/kernels/ops.h"
#include "gtest/gtest.h"

namespace tandem::kernels {
namespace {

TEST(CudaConvertTest, EveryHalfAndBf16PatternMatchesCpu) {
  if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  for (DType t : {DType::kF16, DType::kBF16}) {
    std::vector<float> cpu(all.size()), gpu(all.size());
    ConvertToFloat(t, all.data(), static_cast<int64_t>(all.size()), cpu.data());
    ASSERT_TRUE(cuda::ConvertToFloatOnDevice(t, all.data(), static_cast<int64_t>(all.size()), gpu.data()).ok());
    // Compare bit patterns so NaNs compare too.
    EXPECT_EQ(0, std::memcmp(cpu.data(), gpu.data(), cpu.size() * sizeof(float))) << DTypeName(t);
  }
}

TEST(CudaConvertTest, ReportsUnavailableWithoutDevice) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  float x = 1.0f, y = 0.0f;
  EXPECT_EQ(cuda::ConvertToFloatOnDevice(DType::kF32, &x, 1, &y).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tandem::kernels
