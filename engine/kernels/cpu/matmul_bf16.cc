// MatMulBf16: the AMX kernel where the CPU has it, else BF16-rounded
// activations through the fp32 kernels (products are exact in fp32 either
// way; only the summation order differs, see matmul_kernels.h).
// Thread-safety: pure function; the rounding scratch is per calling thread.
#include <cstdint>
#include <vector>

#include "engine/kernels/cpu/matmul_kernels.h"
#include "engine/kernels/ops.h"

namespace tandem::kernels {

void MatMulBf16(const float* x, int64_t m, const WeightRef& w, const float* bias, float* y) {
  if (w.dtype == DType::kBF16 && ActiveCpuIsa() == CpuIsa::kAmx) {
    const cpu::MatMulArgs args{x, m, static_cast<int>(w.dtype), w.data, w.rows, w.cols,
                               w.row_stride > 0 ? w.row_stride : w.cols, bias, y};
    cpu::MatMulAmxBf16(args);
    return;
  }
  static thread_local std::vector<float> rounded;
  const int64_t n = m * w.cols;
  rounded.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rounded[i] = Bf16ToFloat(FloatToBf16(x[i]));
  MatMul(rounded.data(), m, w, bias, y);
}

}  // namespace tandem::kernels
