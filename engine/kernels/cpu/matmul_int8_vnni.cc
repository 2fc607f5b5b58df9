// Int8 dot products on AVX512-VNNI; compiled with -mavx512f -mavx512bw
// -mavx512vnni and run only when CpuHasAvx512Vnni().
//
// vpdpbusd multiplies unsigned bytes by signed bytes (four per int32 lane)
// and adds into int32 lanes without saturation. The activations are signed,
// so each is offset by 128 (x ^ 0x80 reinterprets q in [-127, 127] as q + 128
// in [1, 255]) and 128 * sum_k w[j][k] is subtracted at the end:
//   sum (q + 128) w = sum q w + 128 sum w.
// All of it is modular int32 arithmetic, so the result is exact whenever the
// true sum fits in int32, even if a partial sum wraps on the way.
//
// Shape of the work: a kMr x kNr register tile (batch rows x weight rows),
// both operands k-contiguous, 64 k per step; the lanes of each accumulator
// are added at the end (in any order: integers).
// Thread-safety: pure function.
#include <immintrin.h>

#include <utility>  // std::integer_sequence: compile time only, no code

#include "engine/kernels/cpu/matmul_int8_kernels.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int kMr = 4;  // batch rows per tile
constexpr int kNr = 6;  // weight rows per tile (24 accumulators + 4 x + 1 w <= 32 zmm)

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// The lane sums of a, b, c, d as one vector [sum a, sum b, sum c, sum d]:
// interleave and add pairs, then fold the four 128-bit lanes (13 ops where
// four separate reductions take ~36).
inline __m128i Sum4(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  const __m512i abcd = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  const __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
}

// 128 * w_sums[0..n) in the low n lanes (n <= 4), zero above.
inline __m128i Offsets(const int32_t* w_sums, int n) {
  const __m128i s = _mm_maskz_loadu_epi32(static_cast<__mmask8>((1u << n) - 1), w_sums);
  return _mm_slli_epi32(s, 7);
}

template <int MR, int NR>
void Tile(const int8_t* x, const int8_t* w, const int32_t* w_sums, int64_t kp, int32_t* acc, int64_t ld_acc) {
  __m512i a[MR][NR];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) a[i][j] = _mm512_setzero_si512();
  }
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t k = 0; k < kp; k += 64) {
    __m512i xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_xor_si512(_mm512_loadu_si512(x + i * kp + k), flip);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512i wv = _mm512_loadu_si512(w + j * kp + k);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) a[i][j] = _mm512_dpbusd_epi32(a[i][j], xv[i], wv);
    }
  }
  // Four accumulators' sums at a time (Sum4), minus the offset correction.
  // Unsigned-style wrapping int32 arithmetic: the result is the exact sum.
  const __m128i offset_lo = Offsets(w_sums, NR < 4 ? NR : 4);
  const __m128i offset_hi = NR > 4 ? Offsets(w_sums + 4, NR - 4) : _mm_setzero_si128();
  const __m512i zero = _mm512_setzero_si512();
  for (int i = 0; i < MR; ++i) {
    alignas(16) int32_t out[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(out),
                    _mm_sub_epi32(Sum4(a[i][0], NR > 1 ? a[i][1] : zero, NR > 2 ? a[i][2] : zero,
                                       NR > 3 ? a[i][3] : zero),
                                  offset_lo));
    if constexpr (NR > 4) {
      _mm_store_si128(reinterpret_cast<__m128i*>(out + 4),
                      _mm_sub_epi32(Sum4(a[i][4 % NR], NR > 5 ? a[i][5 % NR] : zero, zero, zero), offset_hi));
    }
    for (int j = 0; j < NR; ++j) acc[i * ld_acc + j] = out[j];
  }
}

using TileFn = void (*)(const int8_t*, const int8_t*, const int32_t*, int64_t, int32_t*, int64_t);

template <int MR, int... NRs>
constexpr void FillRow(TileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &Tile<MR, NRs + 1>), ...);
}

// fn[mr - 1][nr - 1] for every edge-tile size.
struct TileTable {
  TileFn fn[kMr][kNr];
  constexpr TileTable() : fn() {
    FillRow<1>(fn[0], std::make_integer_sequence<int, kNr>());
    FillRow<2>(fn[1], std::make_integer_sequence<int, kNr>());
    FillRow<3>(fn[2], std::make_integer_sequence<int, kNr>());
    FillRow<4>(fn[3], std::make_integer_sequence<int, kNr>());
  }
};

constexpr TileTable kTiles{};

}  // namespace

void Int8DotsAvx512Vnni(const Int8DotArgs& a) {
  for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
    const int64_t mr = Min(kMr, a.m - i0);
    for (int64_t j0 = 0; j0 < a.nr; j0 += kNr) {
      const int64_t nr = Min(kNr, a.nr - j0);
      kTiles.fn[mr - 1][nr - 1](a.xq + i0 * a.kp, a.w + j0 * a.kp, a.w_sums + j0, a.kp, a.acc + i0 * a.nr + j0,
                                a.nr);
    }
  }
}

}  // namespace tandem::kernels::cpu
