// MatMul for AVX2 + FMA + F16C (the baseline every supported CPU runs).
// Numerics: matmul_kernels.h. The 16 shared lanes are two ymm registers
// (lanes 0-7 and 8-15), each lane running the same fma chain as the AVX-512
// kernel's, so both give the same bits.
//
// Tiling mirrors matmul_avx512.cc with a smaller register tile (16 ymm
// registers): panels of kNr weight rows, kMr batch rows per tile, BF16/F16
// panels widened once to fp32 when several row tiles reuse them.
// Thread-safety: pure function; parallel inside (OpenMP).
#include <immintrin.h>

#include <cstdlib>
#include <cstring>
#include <utility>  // std::integer_sequence: compile time only, no code

#include "engine/kernels/cpu/matmul_kernels.h"
#include "engine/kernels/cpu/thread_scratch.h"

namespace tandem::kernels::cpu {
namespace {

enum WeightType { kF32 = 0, kF16 = 1, kBF16 = 2 };  // DType's values

constexpr int kMr = 2;
constexpr int kNr = 3;  // 2 x 3 x 2 accumulators + 2 x + 1 w <= 16 ymm

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// 8 weights from element k of `row` as fp32.
template <int WT>
inline __m256 Load8(const char* row, int64_t k) {
  if constexpr (WT == kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k));
    if constexpr (WT == kBF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
  }
}

// Copies the last `n` (< 16) elements from element k of `row`, widened and
// zero-padded to 16 floats, into dst.
template <int WT>
inline void TailToFloat(const char* row, int64_t k, int64_t n, float* dst) {
  if constexpr (WT == kF32) {
    std::memcpy(dst, reinterpret_cast<const float*>(row) + k, n * sizeof(float));
  } else {
    uint16_t h[16] = {};
    std::memcpy(h, row + 2 * k, n * sizeof(uint16_t));
    __m128i lo, hi;
    std::memcpy(&lo, h, 16);
    std::memcpy(&hi, h + 8, 16);
    if constexpr (WT == kBF16) {
      _mm256_storeu_ps(dst, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(lo), 16)));
      _mm256_storeu_ps(dst + 8, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(hi), 16)));
    } else {
      _mm256_storeu_ps(dst, _mm256_cvtph_ps(lo));
      _mm256_storeu_ps(dst + 8, _mm256_cvtph_ps(hi));
    }
    return;
  }
  for (int64_t i = n; i < 16; ++i) dst[i] = 0.0f;
}

// The shared tree over lanes lo (0-7) and hi (8-15).
inline float Tree(__m256 lo, __m256 hi) {
  const __m256 s8 = _mm256_add_ps(lo, hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

template <int MR, int NR, int WT>
void Tile(const float* x, int64_t ldx, const char* w, int64_t ldw_bytes, int64_t k, const float* bias,
          float* y, int64_t ldy) {
  __m256 acc[2][MR][NR];
#pragma GCC unroll 32
  for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) acc[h][i][j] = _mm256_setzero_ps();
    }
  }
  const int64_t k16 = k / 16 * 16;
  for (int64_t kk = 0; kk < k16; kk += 16) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256 xv[MR];
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) xv[i] = _mm256_loadu_ps(x + i * ldx + kk + 8 * h);
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) {
        const __m256 wv = Load8<WT>(w + j * ldw_bytes, kk + 8 * h);
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) acc[h][i][j] = _mm256_fmadd_ps(xv[i], wv, acc[h][i][j]);
      }
    }
  }
  if (k16 < k) {
    const int64_t n = k - k16;
    float xt[MR][16];
    float wt[NR][16];
    for (int i = 0; i < MR; ++i) TailToFloat<kF32>(reinterpret_cast<const char*>(x + i * ldx), k16, n, xt[i]);
    for (int j = 0; j < NR; ++j) TailToFloat<WT>(w + j * ldw_bytes, k16, n, wt[j]);
    for (int h = 0; h < 2; ++h) {
      for (int j = 0; j < NR; ++j) {
        const __m256 wv = _mm256_loadu_ps(wt[j] + 8 * h);
        for (int i = 0; i < MR; ++i) {
          acc[h][i][j] = _mm256_fmadd_ps(_mm256_loadu_ps(xt[i] + 8 * h), wv, acc[h][i][j]);
        }
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      y[i * ldy + j] = Tree(acc[0][i][j], acc[1][i][j]) + (bias != nullptr ? bias[j] : 0.0f);
    }
  }
}

using TileFn = void (*)(const float*, int64_t, const char*, int64_t, int64_t, const float*, float*, int64_t);

template <int WT, int MR, int... NRs>
constexpr void FillRow(TileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &Tile<MR, NRs + 1, WT>), ...);
}

template <int WT>
struct TileTable {
  TileFn fn[kMr][kNr];
  constexpr TileTable() : fn() {
    FillRow<WT, 1>(fn[0], std::make_integer_sequence<int, kNr>());
    FillRow<WT, 2>(fn[1], std::make_integer_sequence<int, kNr>());
  }
};

template <int WT>
constexpr TileTable<WT> kTiles{};

float* PanelScratch(int64_t floats) {
  static thread_local ThreadScratch scratch;
  return static_cast<float*>(scratch.Get(static_cast<size_t>(floats) * sizeof(float)));
}

template <int WT>
void WidenPanel(const char* w, int64_t ldw_bytes, int64_t rows, int64_t k, float* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const char* src = w + r * ldw_bytes;
    float* d = dst + r * k;
    int64_t kk = 0;
    for (; kk + 8 <= k; kk += 8) _mm256_storeu_ps(d + kk, Load8<WT>(src, kk));
    if (kk < k) {
      float t[16];
      TailToFloat<WT>(src, kk, k - kk, t);
      std::memcpy(d + kk, t, (k - kk) * sizeof(float));
    }
  }
}

template <int WT>
void Run(const MatMulArgs& a) {
  constexpr int64_t kElem = WT == kF32 ? 4 : 2;
  const int64_t ldw = a.row_stride * kElem;
  const int64_t num_panels = (a.n + kNr - 1) / kNr;
  const bool widen = WT != kF32 && a.m > kMr;
  const bool parallel = a.m * a.n * a.k >= (1 << 16);
#pragma omp parallel if (parallel)
  {
    float* scratch = widen ? PanelScratch(kNr * a.k) : nullptr;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < num_panels; ++p) {
      const int64_t r0 = p * kNr;
      const int64_t nr = Min(kNr, a.n - r0);
      const char* wp = static_cast<const char*>(a.w) + r0 * ldw;
      const float* bias = a.bias != nullptr ? a.bias + r0 : nullptr;
      if (widen) {
        WidenPanel<WT>(wp, ldw, nr, a.k, scratch);
        for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
          const int64_t mr = Min(kMr, a.m - i0);
          kTiles<kF32>.fn[mr - 1][nr - 1](a.x + i0 * a.k, a.k, reinterpret_cast<const char*>(scratch),
                                          a.k * 4, a.k, bias, a.y + i0 * a.n + r0, a.n);
        }
      } else {
        for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
          const int64_t mr = Min(kMr, a.m - i0);
          kTiles<WT>.fn[mr - 1][nr - 1](a.x + i0 * a.k, a.k, wp, ldw, a.k, bias, a.y + i0 * a.n + r0, a.n);
        }
      }
    }
  }
}

}  // namespace

void MatMulAvx2(const MatMulArgs& a) {
  switch (a.weight_dtype) {
    case kF32:
      return Run<kF32>(a);
    case kF16:
      return Run<kF16>(a);
    default:
      return Run<kBF16>(a);
  }
}

}  // namespace tandem::kernels::cpu
