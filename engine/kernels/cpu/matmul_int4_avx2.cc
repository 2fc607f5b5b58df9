// Int4 kernels on AVX2 (the build's baseline). Numerics: int4_matmul.h;
// the 16 lanes of the order are two ymm registers (lanes 0-7 and 8-15),
// each lane running the same fma chain as the AVX-512 kernel's.
//
// Dequantizing: 8 codes widened to int32, masked (low nibbles) or shifted
// (high), zero subtracted as integers (exact), converted and multiplied by
// the scale: the same single fp32 rounding as the AVX-512 lookup table. A
// panel of kNr weight rows is dequantized once into the caller's scratch
// and every kMr x kNr row tile reads it there (AVX2 has no 16-entry
// permute to dequantize in registers cheaply; this is the fallback path).
// Thread-safety: pure function.
#include <immintrin.h>

#include <utility>  // std::integer_sequence: compile time only, no code

#include "engine/kernels/cpu/matmul_int4_kernels.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int kMr = 2;
constexpr int kNr = 3;  // 2 x 3 x 2 accumulators + 2 x + 1 w <= 16 ymm

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// The shared tree over lanes lo (0-7) and hi (8-15).
inline float Tree(__m256 lo, __m256 hi) {
  const __m256 s8 = _mm256_add_ps(lo, hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// All-ones in the lanes l < n (n may be <= 0 or >= 8).
inline __m256i LaneMask(int64_t n) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int32_t c = static_cast<int32_t>(n < 0 ? 0 : (n > 8 ? 8 : n));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), iota);
}

// Dequantizes weight rows j0..j0+nr of the panel into dst [nr][ld] (the
// blocks that hold columns < k).
void DequantizeRows(const Int4PanelArgs& a, int64_t j0, int64_t nr, float* dst, int64_t ld) {
  const __m256i nibble = _mm256_set1_epi32(0x0f);
  for (int64_t j = 0; j < nr; ++j) {
    const uint8_t* codes = a.packed + (j0 + j) * a.row_bytes;
    float* d = dst + j * ld;
    for (int64_t g = 0, k0 = 0; k0 < a.k; ++g) {
      const __m256i zero = _mm256_set1_epi32(a.zeros[(j0 + j) * a.num_groups + g]);
      const __m256 scale = _mm256_set1_ps(a.scales[(j0 + j) * a.num_groups + g]);
      const int64_t end = Min(k0 + a.group_size, a.k);
      for (; k0 < end; k0 += 32) {
        const uint8_t* p = codes + k0 / 2;
        const __m256i b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        const __m256i b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8)));
        const __m256i q[4] = {_mm256_and_si256(b0, nibble), _mm256_and_si256(b1, nibble),
                              _mm256_srli_epi32(b0, 4), _mm256_srli_epi32(b1, 4)};
        for (int s = 0; s < 4; ++s) {
          _mm256_store_ps(d + k0 + 8 * s, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q[s], zero)), scale));
        }
      }
    }
  }
}

// y[i][j] = x[i] . deq[j] (+ bias[j]) for an MR x NR tile over dequantized rows.
template <int MR, int NR>
void Tile(const Int4PanelArgs& a, int64_t i0, int64_t j0, const float* deq, int64_t ld) {
  __m256 acc[2][MR][NR];
#pragma GCC unroll 32
  for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) acc[h][i][j] = _mm256_setzero_ps();
    }
  }
  const float* x = a.x + i0 * a.k;
  for (int64_t k0 = 0; k0 < a.k; k0 += 16) {
    const bool full = k0 + 16 <= a.k;
    const __m256i m0 = LaneMask(a.k - k0), m1 = LaneMask(a.k - k0 - 8);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256 xv[MR];
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        const float* p = x + i * a.k + k0 + 8 * h;
        // Past k, x reads as 0 (and the padded weights are 0), as in MatMul's tail.
        xv[i] = full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, h == 0 ? m0 : m1);
      }
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) {
        const __m256 wv = _mm256_load_ps(deq + j * ld + k0 + 8 * h);
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) acc[h][i][j] = _mm256_fmadd_ps(xv[i], wv, acc[h][i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      a.y[(i0 + i) * a.ldy + j0 + j] = Tree(acc[0][i][j], acc[1][i][j]) + (a.bias != nullptr ? a.bias[j0 + j] : 0.0f);
    }
  }
}

using TileFn = void (*)(const Int4PanelArgs&, int64_t, int64_t, const float*, int64_t);

template <int MR, int... NRs>
constexpr void FillRow(TileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &Tile<MR, NRs + 1>), ...);
}

struct TileTable {
  TileFn fn[kMr][kNr];
  constexpr TileTable() : fn() {
    FillRow<1>(fn[0], std::make_integer_sequence<int, kNr>());
    FillRow<2>(fn[1], std::make_integer_sequence<int, kNr>());
  }
};

constexpr TileTable kTiles{};

}  // namespace

void Int4PanelAvx2(const Int4PanelArgs& a) {
  const int64_t ld = (a.k + 31) / 32 * 32;
  for (int64_t j0 = 0; j0 < a.nr; j0 += kNr) {
    const int64_t nr = Min(kNr, a.nr - j0);
    DequantizeRows(a, j0, nr, a.scratch, ld);
    for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
      const int64_t mr = Min(kMr, a.m - i0);
      kTiles.fn[mr - 1][nr - 1](a, i0, j0, a.scratch, ld);
    }
  }
}

}  // namespace tandem::kernels::cpu
