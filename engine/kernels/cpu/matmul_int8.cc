// MatMulInt8 (int8_matmul.h): quantizes the activations per row, hands
// panels of weight rows to the int32 dot kernel of the chosen path
// (cpu/matmul_int8_*.cc, or the scalar one here), and rescales the sums.
//
// Why the rescale lives here and not in the ISA files: it is the only fp32
// arithmetic of the op, so doing it in one place (compiled with
// -ffp-contract=off: a multiply and an add are never fused into an FMA)
// makes every path's output the same bits by construction.
// Thread-safety: pure functions; scratch is per calling thread (ThreadScratch).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/kernels/cpu/matmul_int8_kernels.h"
#include "engine/kernels/cpu/thread_scratch.h"
#include "engine/kernels/int8_matmul.h"

namespace tandem::kernels {
namespace {

// Weight rows per parallel work item: a panel (24 x padded_cols bytes) stays
// in L1/L2 while every batch row goes through it. A multiple of both ISA
// kernels' tile heights (6 and 4).
constexpr int64_t kPanelRows = 24;

float MaxAbs(const float* v, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m8 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m8 = _mm256_max_ps(m8, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + i)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m8);
  float m = 0.0f;
  for (float l : lanes) m = std::max(m, l);
  for (; i < n; ++i) m = std::max(m, std::fabs(v[i]));
  return m;
}

// rint(v / scale) clamped to [-127, 127]; the vector and scalar forms are
// the same correctly rounded operations, so they agree for every element.
int8_t QuantizeOne(float v, float scale) {
  return static_cast<int8_t>(std::clamp(std::nearbyint(v / scale), -127.0f, 127.0f));
}

__m256i Quantize8(const float* v, __m256 scale) {
  const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(v), scale),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f)));
}

void Dots(Int8Path path, const cpu::Int8DotArgs& a) {
  switch (path) {
    case Int8Path::kAvx512Vnni:
      return cpu::Int8DotsAvx512Vnni(a);
    case Int8Path::kAvx2:
      return cpu::Int8DotsAvx2(a);
    case Int8Path::kScalar:
      return cpu::Int8DotsScalar(a);
  }
}

}  // namespace

namespace cpu {

void Int8DotsScalar(const Int8DotArgs& a) {
  for (int64_t i = 0; i < a.m; ++i) {
    const int8_t* x = a.xq + i * a.kp;
    for (int64_t j = 0; j < a.nr; ++j) {
      const int8_t* w = a.w + j * a.kp;
      int32_t s = 0;
      for (int64_t k = 0; k < a.kp; ++k) s += int32_t{x[k]} * int32_t{w[k]};
      a.acc[i * a.nr + j] = s;
    }
  }
}

}  // namespace cpu

float QuantizeRowInt8(const float* v, int64_t n, int8_t* q) {
  const float scale = MaxAbs(v, n) / 127.0f;
  if (!(scale > 0.0f)) {  // all zeros (or max|v| below 127 * FLT_TRUE_MIN)
    std::memset(q, 0, static_cast<size_t>(n));
    return 0.0f;
  }
  const __m256 s8 = _mm256_set1_ps(scale);
  // 32 at a time: four int32 vectors packed (with saturation, never hit:
  // |q| <= 127) to bytes; the packs interleave 128-bit lanes, the permute
  // puts the 4-byte groups back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i ab = _mm256_packs_epi32(Quantize8(v + i, s8), Quantize8(v + i + 8, s8));
    const __m256i cd = _mm256_packs_epi32(Quantize8(v + i + 16, s8), Quantize8(v + i + 24, s8));
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), bytes);
  }
  for (; i < n; ++i) q[i] = QuantizeOne(v[i], scale);
  return scale;
}

Int8Weight QuantizeWeightInt8(const WeightRef& w) {
  Int8Weight out;
  out.rows = w.rows;
  out.cols = w.cols;
  out.padded_cols = (w.cols + kInt8ColAlign - 1) / kInt8ColAlign * kInt8ColAlign;
  out.data.assign(static_cast<size_t>(w.rows * out.padded_cols), 0);
  out.scales.resize(static_cast<size_t>(w.rows));
  out.row_sums.resize(static_cast<size_t>(w.rows));
  WeightRef ref = w;
  if (ref.row_stride <= 0) ref.row_stride = w.cols;
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(w.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < w.rows; ++r) {
      ConvertToFloat(ref.dtype, ref.RowBytes(r), w.cols, row.data());
      int8_t* q = out.data.data() + r * out.padded_cols;
      out.scales[r] = QuantizeRowInt8(row.data(), w.cols, q);
      int32_t sum = 0;
      for (int64_t c = 0; c < w.cols; ++c) sum += q[c];
      out.row_sums[r] = sum;
    }
  }
  return out;
}

Int8Weight MakeInt8Weight(int64_t rows, int64_t cols, const int8_t* q, int64_t row_stride, const float* scales) {
  Int8Weight out;
  out.rows = rows;
  out.cols = cols;
  out.padded_cols = (cols + kInt8ColAlign - 1) / kInt8ColAlign * kInt8ColAlign;
  out.data.assign(static_cast<size_t>(rows * out.padded_cols), 0);
  out.scales.assign(scales, scales + rows);
  out.row_sums.resize(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int8_t* dst = out.data.data() + r * out.padded_cols;
    std::memcpy(dst, q + r * row_stride, static_cast<size_t>(cols));
    int32_t sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += dst[c];
    out.row_sums[r] = sum;
  }
  return out;
}

Int8Path ActiveInt8Path() {
  return ActiveCpuIsa() >= CpuIsa::kAvx512 && CpuHasAvx512Vnni() ? Int8Path::kAvx512Vnni : Int8Path::kAvx2;
}

void MatMulInt8(const float* x, int64_t m, const Int8Weight& w, const float* bias, float* y) {
  MatMulInt8On(ActiveInt8Path(), x, m, w, bias, y);
}

void MatMulInt8On(Int8Path path, const float* x, int64_t m, const Int8Weight& w, const float* bias, float* y) {
  if (path == Int8Path::kAvx512Vnni && !CpuHasAvx512Vnni()) path = Int8Path::kAvx2;
  const int64_t kp = w.padded_cols;
  const int64_t n = w.rows;
  // The calling thread's scratch: [m][kp] quantized rows, then [m] scales.
  static thread_local cpu::ThreadScratch act_scratch;
  auto* xq = static_cast<int8_t*>(act_scratch.Get(static_cast<size_t>(m * kp + m * 4)));
  auto* x_scales = reinterpret_cast<float*>(xq + m * kp);  // kp % 64 == 0: aligned
#pragma omp parallel for schedule(static) if (m * w.cols >= (1 << 15))
  for (int64_t i = 0; i < m; ++i) {
    x_scales[i] = QuantizeRowInt8(x + i * w.cols, w.cols, xq + i * kp);
    std::memset(xq + i * kp + w.cols, 0, static_cast<size_t>(kp - w.cols));
  }
  const int64_t num_panels = (n + kPanelRows - 1) / kPanelRows;
  // Below this many multiply-adds a thread team costs more than it saves.
  const bool parallel = m * n * w.cols >= (1 << 16);
#pragma omp parallel if (parallel)
  {
    static thread_local cpu::ThreadScratch acc_scratch;
    auto* acc = static_cast<int32_t*>(acc_scratch.Get(static_cast<size_t>(m * kPanelRows) * sizeof(int32_t)));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < num_panels; ++p) {
      const int64_t r0 = p * kPanelRows;
      const int64_t nr = std::min(kPanelRows, n - r0);
      Dots(path, {xq, m, w.data.data() + r0 * kp, w.row_sums.data() + r0, nr, kp, acc});
      for (int64_t i = 0; i < m; ++i) {
        float* yi = y + i * n + r0;
        const int32_t* ai = acc + i * nr;
        for (int64_t j = 0; j < nr; ++j) {
          const float scale = x_scales[i] * w.scales[r0 + j];
          float v = static_cast<float>(ai[j]) * scale;
          if (bias != nullptr) v = v + bias[r0 + j];
          yi[j] = v;
        }
      }
    }
  }
}

}  // namespace tandem::kernels
