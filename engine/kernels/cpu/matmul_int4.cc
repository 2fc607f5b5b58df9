// MatMulInt4 (int4_matmul.h): splits the weight rows into panels, hands each
// panel with every batch row to the chosen path's kernel
// (cpu/matmul_int4_avx512.cc, cpu/matmul_int4_avx2.cc, or the scalar one
// here), and gives each thread its dequantization scratch.
//
// The scalar kernel is the summation order of int4_matmul.h spelled out one
// lane at a time with std::fma: the specification the vector paths match.
// Thread-safety: pure functions; scratch is per calling thread (ThreadScratch).
#include <algorithm>
#include <cmath>

#include "engine/kernels/cpu/matmul_int4_kernels.h"
#include "engine/kernels/cpu/thread_scratch.h"
#include "engine/kernels/int4_matmul.h"

namespace tandem::kernels {
namespace {

// Weight rows per parallel work item: a multiple of every kernel's tile
// heights (AVX-512: 4, 6 and 8; AVX2: 3), so only the matrix's last panel
// has edge tiles. Changing it changes no result (the order is per output).
constexpr int64_t kPanelRows = 24;

void Panel(Int4Path path, const cpu::Int4PanelArgs& a) {
  switch (path) {
    case Int4Path::kAvx512:
      return cpu::Int4PanelAvx512(a);
    case Int4Path::kAvx2:
      return cpu::Int4PanelAvx2(a);
    case Int4Path::kScalar:
      return cpu::Int4PanelScalar(a);
  }
}

}  // namespace

namespace cpu {

void Int4PanelScalar(const Int4PanelArgs& a) {
  const int64_t steps = (a.k + 15) / 16;
  for (int64_t j = 0; j < a.nr; ++j) {
    // The row dequantized once (exactly the values the vector paths use).
    float* w = a.scratch;
    for (int64_t c = 0; c < a.k; ++c) {
      const int64_t g = c / a.group_size;
      const uint8_t byte = a.packed[j * a.row_bytes + c / 32 * 16 + c % 16];
      const int code = (c % 32) < 16 ? (byte & 0x0f) : (byte >> 4);
      w[c] = static_cast<float>(code - int{a.zeros[j * a.num_groups + g]}) * a.scales[j * a.num_groups + g];
    }
    for (int64_t i = 0; i < a.m; ++i) {
      const float* x = a.x + i * a.k;
      float lane[16] = {};
      for (int64_t s = 0; s < steps; ++s) {
        for (int l = 0; l < 16; ++l) {
          const int64_t c = s * 16 + l;
          lane[l] = std::fma(c < a.k ? x[c] : 0.0f, c < a.k ? w[c] : 0.0f, lane[l]);
        }
      }
      for (int l = 0; l < 8; ++l) lane[l] = lane[l] + lane[l + 8];
      for (int l = 0; l < 4; ++l) lane[l] = lane[l] + lane[l + 4];
      for (int l = 0; l < 2; ++l) lane[l] = lane[l] + lane[l + 2];
      a.y[i * a.ldy + j] = (lane[0] + lane[1]) + (a.bias != nullptr ? a.bias[j] : 0.0f);
    }
  }
}

}  // namespace cpu

Int4Path ActiveInt4Path() { return ActiveCpuIsa() >= CpuIsa::kAvx512 ? Int4Path::kAvx512 : Int4Path::kAvx2; }

void MatMulInt4(const float* x, int64_t m, const Int4Weight& w, const float* bias, float* y) {
  MatMulInt4On(ActiveInt4Path(), x, m, w, bias, y);
}

void MatMulInt4On(Int4Path path, const float* x, int64_t m, const Int4Weight& w, const float* bias, float* y) {
  if (path == Int4Path::kAvx512 && DetectedCpuIsa() < CpuIsa::kAvx512) path = Int4Path::kAvx2;
  if (m <= 0 || w.rows <= 0) return;
  const int64_t n = w.rows;
  const int64_t num_panels = (n + kPanelRows - 1) / kPanelRows;
  // Below this many multiply-adds a thread team costs more than it saves.
  const bool parallel = m * n * w.cols >= (1 << 16);
#pragma omp parallel if (parallel)
  {
    static thread_local cpu::ThreadScratch scratch;
    auto* panel = static_cast<float*>(
        scratch.Get(static_cast<size_t>(cpu::kInt4ScratchRows * w.padded_cols) * sizeof(float)));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < num_panels; ++p) {
      const int64_t r0 = p * kPanelRows;
      const int64_t nr = std::min(kPanelRows, n - r0);
      const cpu::Int4PanelArgs args{x,
                                    m,
                                    w.cols,
                                    w.packed.data() + r0 * w.RowBytes(),
                                    w.RowBytes(),
                                    w.scales.data() + r0 * w.num_groups,
                                    w.zeros.data() + r0 * w.num_groups,
                                    w.num_groups,
                                    w.group_size,
                                    nr,
                                    n - r0 - nr,
                                    bias != nullptr ? bias + r0 : nullptr,
                                    y + r0,
                                    n,
                                    panel};
      Panel(path, args);
    }
  }
}

}  // namespace tandem::kernels
