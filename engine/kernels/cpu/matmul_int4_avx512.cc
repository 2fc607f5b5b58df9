// Int4 kernels for AVX-512 (F/BW/VL/DQ); compiled with -mavx512* and run
// only when ActiveCpuIsa() >= kAvx512. Numerics: int4_matmul.h (one zmm is
// exactly the 16 lanes of the order).
//
// Dequantizing: a group's 16 possible weights, (j - zero) * scale for
// j = 0..15, are one zmm "table"; a 16-byte load of packed codes widened to
// 16 int32 lanes (vpmovzxbd) indexes it with vpermps, which reads only the
// low 4 bits of each index, so the low nibbles need no mask and the high
// ones one shift. Per 32 weights: 1 widening load, 1 shift, 2 vpermps, and
// the FMAs per batch row. The table holds exactly the fp32 products the
// scalar path computes, so the bits are the same.
//
// Shape of the work, per panel of weight rows:
//  - Few batch rows (m <= kMr, decode): a tile of m batch rows x up to 8
//    (m = 1) or 4 weight rows dequantizes in registers as the codes stream
//    in, so the weights are read once, at a quarter of BF16's bytes.
//  - More rows (prefill): kNr weight rows at a time are dequantized once
//    into the caller's fp32 scratch (L2-resident) and every kMr x kNr row
//    tile reads them from there: loads and FMAs only in the inner loop.
// Both shapes run the same per-lane fma chain, so m never shows in a result.
// Thread-safety: pure function.
#include <immintrin.h>

#include <utility>  // std::integer_sequence: compile time only, no code

#include "engine/kernels/cpu/matmul_int4_kernels.h"
#include "engine/kernels/cpu/tree_avx512.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int kMr = 4;        // batch rows per tile
constexpr int kNr = 6;        // weight rows per prefill tile (24 accumulators + 4 x + 1 w)
constexpr int kDecodeNr = 8;  // weight rows per decode tile at m = 1 (4 for m = 2..4)

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// kCodeMinusZero.v[z][j] = j - z, exact: one load per row and group instead
// of a conversion, a broadcast and a subtraction (the decode loop builds a
// table per weight row per group, so this is on its path).
struct CodeMinusZero {
  alignas(64) float v[16][16];
  constexpr CodeMinusZero() : v() {
    for (int z = 0; z < 16; ++z) {
      for (int j = 0; j < 16; ++j) v[z][j] = static_cast<float>(j - z);
    }
  }
};
constexpr CodeMinusZero kCodeMinusZero{};

// (j - zero) * scale for j = 0..15: j - zero is exact, the product rounded once.
inline __m512 GroupTable(float scale, uint8_t zero) {
  return _mm512_mul_ps(_mm512_load_ps(kCodeMinusZero.v[zero & 15]), _mm512_set1_ps(scale));
}

// The 16 codes of a block's low nibbles (in the low 4 bits of each lane).
inline __m512i BlockCodes(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Masks of the valid columns among the block's low (k0..k0+15) and high
// (k0+16..k0+31) halves, `rem` = k - k0 > 0 columns left.
inline __mmask16 LowMask(int64_t rem) {
  return rem >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << rem) - 1);
}
inline __mmask16 HighMask(int64_t rem) {
  if (rem >= 32) return static_cast<__mmask16>(0xffff);
  return rem <= 16 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << (rem - 16)) - 1);
}

// One 32-column block of a decode tile: codes widened, looked up in each
// row's table, and both 16-lane steps (low nibbles, then high) added.
template <int MR, int NR>
__attribute__((always_inline)) inline void DecodeBlock(const __m512 (&xl)[MR], const __m512 (&xh)[MR],
                                                       const __m512 (&table)[NR], const uint8_t* codes,
                                                       int64_t row_bytes, __m512 (&acc)[MR][NR]) {
#pragma GCC unroll 32
  for (int j = 0; j < NR; ++j) {
    const __m512i v = BlockCodes(codes + j * row_bytes);
    const __m512 wl = _mm512_permutexvar_ps(v, table[j]);
    const __m512 wh = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table[j]);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      acc[i][j] = _mm512_fmadd_ps(xl[i], wl, acc[i][j]);
      acc[i][j] = _mm512_fmadd_ps(xh[i], wh, acc[i][j]);
    }
  }
}

template <int NR>
__attribute__((always_inline)) inline void GroupTables(const Int4PanelArgs& a, int64_t j0, int64_t g,
                                                       __m512 (&table)[NR]) {
#pragma GCC unroll 32
  for (int j = 0; j < NR; ++j) {
    table[j] = GroupTable(a.scales[(j0 + j) * a.num_groups + g], a.zeros[(j0 + j) * a.num_groups + g]);
  }
}

// y[i0 + i][j0 + j] = Tree(acc[i][j]) (+ bias[j0 + j]) for both tile kinds.
template <int MR, int NR>
__attribute__((always_inline)) inline void StoreTrees(const Int4PanelArgs& a, int64_t i0, int64_t j0,
                                                      const __m512 (&acc)[MR][NR]) {
  tree512::TileTrees<MR, NR>(acc, [&](int i, int j, float sum) {
    a.y[(i0 + i) * a.ldy + j0 + j] = sum + (a.bias != nullptr ? a.bias[j0 + j] : 0.0f);
  });
}

// y[i][j] = x[i] . deq(w[j]) (+ bias[j]) for an MR x NR decode tile: the
// weights are dequantized from the codes here, group by group, and the
// codes of the `num_next` rows after the tile are prefetched one cache line
// per row per 128 columns: rows are short (1 KiB at k = 2048), so the
// hardware prefetcher, which follows one page at a time, starts each row late.
// The last partial block (k not a multiple of 32) runs after the loop, so
// the loop has no masked branch (with it GCC kept accumulators on the stack).
template <int MR, int NR>
void Tile(const Int4PanelArgs& a, int64_t i0, int64_t j0, int64_t num_next) {
  __m512 acc[MR][NR];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  const float* x = a.x + i0 * a.k;
  const uint8_t* codes = a.packed + j0 * a.row_bytes;
  const int64_t k32 = a.k / 32 * 32;
  __m512 table[NR];
  for (int64_t g = 0, k0 = 0; k0 < k32; ++g) {
    GroupTables<NR>(a, j0, g, table);
    const int64_t end = Min(k0 + a.group_size, k32);
    for (; k0 < end; k0 += 32) {
      if ((k0 & 127) == 0) {
        for (int64_t j = 0; j < num_next; ++j) {
          _mm_prefetch(reinterpret_cast<const char*>(codes + (NR + j) * a.row_bytes + k0 / 2), _MM_HINT_T0);
        }
      }
      __m512 xl[MR], xh[MR];
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        xl[i] = _mm512_loadu_ps(x + i * a.k + k0);
        xh[i] = _mm512_loadu_ps(x + i * a.k + k0 + 16);
      }
      DecodeBlock<MR, NR>(xl, xh, table, codes + k0 / 2, a.row_bytes, acc);
    }
  }
  if (k32 < a.k) {
    // Past k, x reads as 0 (and the padded weights are 0): the lanes of the
    // order that MatMul's masked tail leaves unchanged.
    GroupTables<NR>(a, j0, k32 / a.group_size, table);
    const __mmask16 ml = LowMask(a.k - k32), mh = HighMask(a.k - k32);
    __m512 xl[MR], xh[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      xl[i] = _mm512_maskz_loadu_ps(ml, x + i * a.k + k32);
      xh[i] = _mm512_maskz_loadu_ps(mh, x + i * a.k + k32 + 16);
    }
    DecodeBlock<MR, NR>(xl, xh, table, codes + k32 / 2, a.row_bytes, acc);
  }
  // Groups whose columns all lie past k (a packed matrix padded by a whole
  // group) have nothing to add.
  // The shared tree (lanes l + (l+8), + (l+4), + (l+2), + (l+1)), sixteen
  // outputs per TransposeTree: the same bits as one Tree per output.
  StoreTrees<MR, NR>(a, i0, j0, acc);
}

// The same for an MR x NR prefill tile over weight rows already dequantized
// into deq [NR][ld]: 16 columns per step, as the fp32 MatMul tile (4 x, 24
// accumulators and 1 weight register: no spills).
template <int MR, int NR>
void PanelTile(const Int4PanelArgs& a, int64_t i0, int64_t j0, const float* deq, int64_t ld) {
  __m512 acc[MR][NR];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  const float* x = a.x + i0 * a.k;
  const int64_t k16 = a.k / 16 * 16;
  // The main loop and the masked tail apart (as matmul_avx512.cc): with the
  // tail's branch inside the loop GCC kept the accumulators on the stack.
  for (int64_t k0 = 0; k0 < k16; k0 += 16) {
    __m512 xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_loadu_ps(x + i * a.k + k0);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512 wv = _mm512_load_ps(deq + j * ld + k0);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  if (k16 < a.k) {
    const __mmask16 m = LowMask(a.k - k16);
    __m512 xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_maskz_loadu_ps(m, x + i * a.k + k16);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512 wv = _mm512_load_ps(deq + j * ld + k16);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_fmadd_ps(xv[i], wv, acc[i][j]);
    }
  }
  // The shared tree (lanes l + (l+8), + (l+4), + (l+2), + (l+1)), sixteen
  // outputs per TransposeTree: the same bits as one Tree per output.
  StoreTrees<MR, NR>(a, i0, j0, acc);
}

// Dequantizes weight rows j0..j0+nr of the panel into dst [nr][ld] (the
// blocks that hold columns < k; ld >= k rounded up to 32, a multiple of 16).
void DequantizeRows(const Int4PanelArgs& a, int64_t j0, int64_t nr, float* dst, int64_t ld) {
  for (int64_t j = 0; j < nr; ++j) {
    const uint8_t* codes = a.packed + (j0 + j) * a.row_bytes;
    float* d = dst + j * ld;
    for (int64_t g = 0, k0 = 0; k0 < a.k; ++g) {
      const __m512 table = GroupTable(a.scales[(j0 + j) * a.num_groups + g], a.zeros[(j0 + j) * a.num_groups + g]);
      const int64_t end = Min(k0 + a.group_size, a.k);
      for (; k0 < end; k0 += 32) {
        const __m512i v = BlockCodes(codes + k0 / 2);
        _mm512_store_ps(d + k0, _mm512_permutexvar_ps(v, table));
        _mm512_store_ps(d + k0 + 16, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table));
      }
    }
  }
}

using TileFn = void (*)(const Int4PanelArgs&, int64_t, int64_t, int64_t);
using PanelTileFn = void (*)(const Int4PanelArgs&, int64_t, int64_t, const float*, int64_t);

template <int MR, int... NRs>
constexpr void FillDecodeRow(TileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &Tile<MR, NRs + 1>), ...);
}

template <int MR, int... NRs>
constexpr void FillPrefillRow(PanelTileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &PanelTile<MR, NRs + 1>), ...);
}

// decode[mr - 1][nr - 1] (nr up to 8 for mr = 1, 4 otherwise) and
// prefill[mr - 1][nr - 1] for every edge-tile size.
struct TileTables {
  TileFn decode[kMr][kDecodeNr];
  PanelTileFn prefill[kMr][kNr];
  constexpr TileTables() : decode(), prefill() {
    FillDecodeRow<1>(decode[0], std::make_integer_sequence<int, kDecodeNr>());
    FillDecodeRow<2>(decode[1], std::make_integer_sequence<int, 4>());
    FillDecodeRow<3>(decode[2], std::make_integer_sequence<int, 4>());
    FillDecodeRow<4>(decode[3], std::make_integer_sequence<int, 4>());
    FillPrefillRow<1>(prefill[0], std::make_integer_sequence<int, kNr>());
    FillPrefillRow<2>(prefill[1], std::make_integer_sequence<int, kNr>());
    FillPrefillRow<3>(prefill[2], std::make_integer_sequence<int, kNr>());
    FillPrefillRow<4>(prefill[3], std::make_integer_sequence<int, kNr>());
  }
};

constexpr TileTables kTiles{};

}  // namespace

void Int4PanelAvx512(const Int4PanelArgs& a) {
  if (a.m <= kMr) {
    const int64_t step = a.m == 1 ? kDecodeNr : 4;
    for (int64_t j0 = 0; j0 < a.nr; j0 += step) {
      const int64_t nr = Min(step, a.nr - j0);
      const int64_t num_next = Min(nr, a.nr + a.rows_after - (j0 + nr));
      kTiles.decode[a.m - 1][nr - 1](a, 0, j0, num_next);
    }
    return;
  }
  const int64_t ld = (a.k + 31) / 32 * 32;
  for (int64_t j0 = 0; j0 < a.nr; j0 += kNr) {
    const int64_t nr = Min(kNr, a.nr - j0);
    DequantizeRows(a, j0, nr, a.scratch, ld);
    for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
      const int64_t mr = Min(kMr, a.m - i0);
      kTiles.prefill[mr - 1][nr - 1](a, i0, j0, a.scratch, ld);
    }
  }
}

}  // namespace tandem::kernels::cpu
