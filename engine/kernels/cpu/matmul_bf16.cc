// MatMulBf16: the AMX kernel where the CPU has it; on AVX512_BF16 without
// AMX, BF16 weights may take the vdpbf16ps kernel (MatMulAvx512Bf16, the same
// bits as the fallback); else BF16-rounded activations through the fp32
// kernels (products are exact in fp32 every way; only AMX's summation order
// differs, see matmul_kernels.h).
// Thread-safety: pure function; the rounding scratch is per calling thread;
// the one-time vdpbf16ps probe is a function-local static.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/kernels/cpu/matmul_kernels.h"
#include "engine/kernels/ops.h"

namespace tandem::kernels {
namespace {

// Whether the vdpbf16ps kernel is the faster way to the fallback's bits on
// this CPU (asked only at kAvx512Bf16). It gives the same bits, so this is a
// speed choice: TANDEM_BF16_DOT=1 / 0 forces it on / off; otherwise it runs
// when the core's vdpbf16ps does clearly more multiply-adds per second than
// its fp32 fma (measured once: e.g. Sapphire Rapids-class cores run
// vdpbf16ps zmm at half their fp32 fma rate, so there the fallback is faster).
bool UseBf16Dot() {
  static const bool use = [] {
    const char* env = std::getenv("TANDEM_BF16_DOT");
    if (env != nullptr && (env[0] == '0' || env[0] == '1') && env[1] == '\0') return env[0] == '1';
    return cpu::Bf16DotMacRateOverFma() > 1.25;
  }();
  return use;
}

}  // namespace

bool Bf16MatMulIsFast() {
  const CpuIsa isa = ActiveCpuIsa();
  return isa == CpuIsa::kAmx || (isa == CpuIsa::kAvx512Bf16 && UseBf16Dot());
}

void MatMulBf16(const float* x, int64_t m, const WeightRef& w, const float* bias, float* y) {
  if (w.dtype == DType::kBF16 && ActiveCpuIsa() == CpuIsa::kAmx) {
    const cpu::MatMulArgs args{x,    m, static_cast<int>(w.dtype), w.data, w.rows, w.cols,
                               w.row_stride > 0 ? w.row_stride : w.cols, bias, y, w.amx_tiles};
    cpu::MatMulAmxBf16(args);
    return;
  }
  if (w.dtype == DType::kBF16 && ActiveCpuIsa() == CpuIsa::kAvx512Bf16 && UseBf16Dot()) {
    const cpu::MatMulArgs args{x,    m, static_cast<int>(w.dtype), w.data, w.rows, w.cols,
                               w.row_stride > 0 ? w.row_stride : w.cols, bias, y};
    cpu::MatMulAvx512Bf16(args);
    return;
  }
  static thread_local std::vector<float> rounded;
  const int64_t n = m * w.cols;
  rounded.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rounded[i] = Bf16ToFloat(FloatToBf16(x[i]));
  MatMul(rounded.data(), m, w, bias, y);
}

int64_t AmxPackedElems(int64_t rows, int64_t cols) {
  return (rows + 31) / 32 * 32 * ((cols + 31) / 32 * 32);
}

void PackBf16ForAmx(const WeightRef& w, uint16_t* dst) {
  const int64_t steps = (w.cols + 31) / 32;
  const int64_t stride = w.row_stride > 0 ? w.row_stride : w.cols;
  const auto* src = static_cast<const uint16_t*>(w.data);
  for (int64_t b = 0; b < (w.rows + 31) / 32; ++b) {
    for (int64_t s = 0; s < steps; ++s) {
      uint16_t* tile = dst + (b * steps + s) * 32 * 32;
      for (int64_t r = 0; r < 32; ++r) {
        const int64_t row = 32 * b + r;
        const int64_t n = row < w.rows ? std::min<int64_t>(32, w.cols - 32 * s) : 0;
        if (n > 0) std::memcpy(tile + r * 32, src + row * stride + 32 * s, static_cast<size_t>(n) * 2);
        std::memset(tile + r * 32 + n, 0, static_cast<size_t>(32 - n) * 2);
      }
    }
  }
}

}  // namespace tandem::kernels
