// MatMulFp8 (fp8_matmul.h): hands panels of weight rows to the dot kernel of
// the chosen path (cpu/matmul_fp8_*.cc) and rescales the sums.
//
// Why the rescale lives here and not in the ISA files: it is the only fp32
// arithmetic after the shared-order sums, so doing it in one place (compiled
// with -ffp-contract=off: the scale product and the bias add are never fused
// into an FMA) makes every path's output the same bits by construction.
// Thread-safety: pure functions; scratch is per calling thread (ThreadScratch).
#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/kernels/cpu/matmul_fp8_kernels.h"
#include "engine/kernels/cpu/thread_scratch.h"
#include "engine/kernels/fp8_matmul.h"

namespace tandem::kernels {
namespace {

// Weight rows per parallel work item: a multiple of both kernels' tile
// heights (6 and 3) and of kFp8ScratchRows.
constexpr int64_t kPanelRows = 24;

// The widened codes are E4M3 * 2^-8; this puts the 2^8 back (exact).
constexpr float kRebias = 256.0f;

void Dots(Fp8Path path, const cpu::Fp8DotArgs& a) {
  switch (path) {
    case Fp8Path::kAvx512:
      return cpu::Fp8DotsAvx512(a);
    case Fp8Path::kAvx2:
      return cpu::Fp8DotsAvx2(a);
  }
}

Fp8Path Supported(Fp8Path path) {
  return path == Fp8Path::kAvx512 && DetectedCpuIsa() < CpuIsa::kAvx512 ? Fp8Path::kAvx2 : path;
}

}  // namespace

Fp8Path ActiveFp8Path() { return ActiveCpuIsa() >= CpuIsa::kAvx512 ? Fp8Path::kAvx512 : Fp8Path::kAvx2; }

void MatMulFp8(const float* x, int64_t m, const Fp8Weight& w, const float* bias, float* y) {
  MatMulFp8On(ActiveFp8Path(), x, m, w, bias, y);
}

void MatMulFp8On(Fp8Path path, const float* x, int64_t m, const Fp8Weight& w, const float* bias, float* y) {
  path = Supported(path);
  const int64_t kp = w.padded_cols;
  const int64_t n = w.rows;
  const int64_t num_panels = (n + kPanelRows - 1) / kPanelRows;
  // Below this many multiply-adds a thread team costs more than it saves.
  const bool parallel = m * n * w.cols >= (1 << 16);
#pragma omp parallel if (parallel)
  {
    // This thread's widened rows ([kFp8ScratchRows][kp]), then its sums ([m][kPanelRows]).
    static thread_local cpu::ThreadScratch scratch;
    auto* widened = static_cast<float*>(
        scratch.Get(static_cast<size_t>(cpu::kFp8ScratchRows * kp + m * kPanelRows) * sizeof(float)));
    float* acc = widened + cpu::kFp8ScratchRows * kp;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < num_panels; ++p) {
      const int64_t r0 = p * kPanelRows;
      const int64_t nr = std::min(kPanelRows, n - r0);
      Dots(path, {x, m, w.cols, w.codes.data() + r0 * kp, nr, kp, widened, acc});
      for (int64_t i = 0; i < m; ++i) {
        float* yi = y + i * n + r0;
        const float* ai = acc + i * nr;
        for (int64_t j = 0; j < nr; ++j) {
          float v = ai[j] * (w.scales[r0 + j] * kRebias);
          if (bias != nullptr) v = v + bias[r0 + j];
          yi[j] = v;
        }
      }
    }
  }
}

void WidenFp8CodesOn(Fp8Path path, const uint8_t* codes, int64_t n, float* out) {
  const int64_t padded = (n + 15) / 16 * 16;
  std::vector<uint8_t> in(static_cast<size_t>(padded), 0);
  std::vector<float> wide(static_cast<size_t>(padded));
  std::memcpy(in.data(), codes, static_cast<size_t>(n));
  if (Supported(path) == Fp8Path::kAvx512) {
    cpu::WidenFp8Avx512(in.data(), padded, wide.data());
  } else {
    cpu::WidenFp8Avx2(in.data(), padded, wide.data());
  }
  std::memcpy(out, wide.data(), static_cast<size_t>(n) * sizeof(float));
}

}  // namespace tandem::kernels
