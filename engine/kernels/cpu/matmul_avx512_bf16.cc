// MatMulBf16 with vdpbf16ps for AVX512_BF16 CPUs (BF16 weights); compiled
// with -mavx512* -mavx512bf16 and run only when ActiveCpuIsa() allows it.
// Numerics: bit-identical to rounded x through MatMulAvx512 (matmul_kernels.h).
//
// Why it is the same arithmetic: vdpbf16ps does, per fp32 lane l, two
// sequential fmas, the pair's odd element first (acc += a[2l+1]*b[2l+1], then
// acc += a[2l]*b[2l]); BF16 x BF16 products are exact in fp32, so each step is
// an fma. The fp32 kernels' lane l takes k = l, l+16, l+32, ... in order, so in
// each 32-wide k block starting at 32s lane l must see 32s+l, then 32s+16+l.
// Both operands are therefore laid out with BF16 position 2l+1 = element
// 32s+l and position 2l = element 32s+16+l:
//  - x is rounded to BF16 (FloatToBf16's rounding, in integer ops) and
//    interleaved so once per call into a per-thread scratch, zero-padded to a
//    multiple of 32;
//  - a weight block is permuted in the register it is loaded into (one vpermw
//    per 64 bytes), with the k tail masked to zero.
// The padding only adds fma(0 * 0), which leaves a non-negative-zero
// accumulator unchanged, and the fp32 kernels pad their last group the same
// way. Then the same Tree (tree512::TileTrees: sixteen at once, the same
// bits) and bias. vdpbf16ps flushes subnormal inputs and
// results (DAZ/FTZ), so the bits match only while no product or partial sum
// is subnormal.
//
// Shape of the work follows matmul_avx512.cc: panels of kNr weight rows per
// OpenMP thread (static schedule; nothing in the order depends on m or on the
// thread), a kMr x kNr register tile over the batch rows. Few rows (decode):
// weights stream from memory with the next panel prefetched, permuted as
// loaded and the permutation shared by the tile's rows. More rows: the panel
// is permuted once into a per-thread scratch (zero-padded) that every row
// tile reuses, so the inner loop is loads + vdpbf16ps.
// Thread-safety: pure function; parallel inside (OpenMP).
#include <immintrin.h>

#include "engine/kernels/cpu/matmul_kernels.h"
#include "engine/kernels/cpu/thread_scratch.h"
#include "engine/kernels/cpu/tree_avx512.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int kMr = 4;  // batch rows per register tile
constexpr int kNr = 6;  // weight rows per tile (4 x 6 accumulators + 4 x + 1 w < 32 zmm)

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// result[2l] = v[16 + l], result[2l + 1] = v[l]: the pair layout above.
alignas(64) constexpr uint16_t kPairIndex[32] = {16, 0, 17, 1, 18, 2, 19, 3, 20, 4,  21, 5,  22, 6,  23, 7,
                                                 24, 8, 25, 9, 26, 10, 27, 11, 28, 12, 29, 13, 30, 14, 31, 15};

inline __m512i PairIndex() { return _mm512_load_si512(kPairIndex); }

// FloatToBf16 (engine/model/dtype.h) on 16 lanes, the BF16 in each lane's
// upper half: NaN -> (bits >> 16) | 0x40, else bits + 0x7fff + lsb.
inline __m512i RoundToBf16High(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_or_epi32(r, nan, b, _mm512_set1_epi32(0x00400000));
}

inline __mmask16 Mask16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1);
}

// One row of x (k floats) into `dst` (kp = k rounded up to 32 BF16 values) in
// the pair layout: dword l of block s = bf16(x[32s+l]) << 16 | bf16(x[32s+16+l]).
void RoundRow(const float* x, int64_t k, int64_t kp, uint16_t* dst) {
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t kk = 0; kk < kp; kk += 32) {
    __m512 lo, hi;
    if (kk + 32 <= k) {
      lo = _mm512_loadu_ps(x + kk);
      hi = _mm512_loadu_ps(x + kk + 16);
    } else {
      lo = _mm512_maskz_loadu_ps(Mask16(k - kk), x + kk);
      hi = _mm512_maskz_loadu_ps(Mask16(k - kk - 16), x + kk + 16);
    }
    const __m512i pair =
        _mm512_or_si512(_mm512_and_si512(RoundToBf16High(lo), high), _mm512_srli_epi32(RoundToBf16High(hi), 16));
    _mm512_storeu_si512(dst + kk, pair);
  }
}

inline __m512 Dot(__m512 acc, __m512i x, __m512i w) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(x), reinterpret_cast<__m512bh>(w));
}

// y[i][j] = x[i] . w[j] (+ bias[j]) for an MR x NR tile. x: pair-layout rows
// of kp values, ldx apart. RAW: w is the weight matrix as stored (k values a
// row, permuted here, tail masked); else a pair-layout panel of kp values a
// row. `next` (RAW only, may be null): the rows the following tile streams,
// prefetched one cache line per row per 32-value step.
template <int MR, int NR, bool RAW>
void Tile(const uint16_t* x, int64_t ldx, const uint16_t* w, int64_t ldw, int64_t k, int64_t kp, const float* bias,
          float* y, int64_t ldy, const uint16_t* next) {
  __m512 acc[MR][NR];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  const __m512i idx = PairIndex();
  const int64_t full = RAW ? k / 32 * 32 : kp;
  int64_t kk = 0;
  for (; kk < full; kk += 32) {
    if (RAW && next != nullptr) {
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char*>(next + j * ldw + kk), _MM_HINT_T0);
    }
    __m512i xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_loadu_si512(x + i * ldx + kk);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      __m512i wv = _mm512_loadu_si512(w + j * ldw + kk);
      if (RAW) wv = _mm512_permutexvar_epi16(idx, wv);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) acc[i][j] = Dot(acc[i][j], xv[i], wv);
    }
  }
  if (RAW && kk < k) {
    const __mmask32 mask = static_cast<__mmask32>((1ull << (k - kk)) - 1);
    __m512i xv[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_loadu_si512(x + i * ldx + kk);
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) {
      const __m512i wv = _mm512_permutexvar_epi16(idx, _mm512_maskz_loadu_epi16(mask, w + j * ldw + kk));
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) acc[i][j] = Dot(acc[i][j], xv[i], wv);
    }
  }
  // The shared tree (lanes l + (l+8), + (l+4), + (l+2), + (l+1)), sixteen
  // outputs per TransposeTree: the same bits as one Tree per output.
  tree512::TileTrees<MR, NR>(
      acc, [&](int i, int j, float sum) { y[i * ldy + j] = sum + (bias != nullptr ? bias[j] : 0.0f); });
}

using TileFn = void (*)(const uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, const float*, float*,
                        int64_t, const uint16_t*);

#define TANDEM_TILE_ROW(MR, RAW)                                                                        \
  {                                                                                                     \
    &Tile<MR, 1, RAW>, &Tile<MR, 2, RAW>, &Tile<MR, 3, RAW>, &Tile<MR, 4, RAW>, &Tile<MR, 5, RAW>,      \
        &Tile<MR, 6, RAW>                                                                               \
  }
// [raw][mr - 1][nr - 1] for every edge-tile size.
constexpr TileFn kTiles[2][kMr][kNr] = {
    {TANDEM_TILE_ROW(1, false), TANDEM_TILE_ROW(2, false), TANDEM_TILE_ROW(3, false), TANDEM_TILE_ROW(4, false)},
    {TANDEM_TILE_ROW(1, true), TANDEM_TILE_ROW(2, true), TANDEM_TILE_ROW(3, true), TANDEM_TILE_ROW(4, true)},
};
#undef TANDEM_TILE_ROW
static_assert(kMr == 4 && kNr == 6, "kTiles lists 4 x 6 tile sizes");

// The calling thread's rounded-x scratch ([m][kp]) and each thread's panel
// scratch ([kNr][kp]); grow, never shrink.
uint16_t* XScratch(int64_t elems) {
  static thread_local ThreadScratch scratch;
  return static_cast<uint16_t*>(scratch.Get(static_cast<size_t>(elems) * 2));
}
uint16_t* PanelScratch(int64_t elems) {
  static thread_local ThreadScratch scratch;
  return static_cast<uint16_t*>(scratch.Get(static_cast<size_t>(elems) * 2));
}

// `rows` weight rows (k values, ldw apart) into dst [rows][kp] in the pair
// layout, zero past k.
void PermutePanel(const uint16_t* w, int64_t ldw, int64_t rows, int64_t k, int64_t kp, uint16_t* dst) {
  const __m512i idx = PairIndex();
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* src = w + r * ldw;
    uint16_t* d = dst + r * kp;
    int64_t kk = 0;
    for (; kk + 32 <= k; kk += 32) _mm512_storeu_si512(d + kk, _mm512_permutexvar_epi16(idx, _mm512_loadu_si512(src + kk)));
    if (kk < k) {
      const __mmask32 mask = static_cast<__mmask32>((1ull << (k - kk)) - 1);
      _mm512_storeu_si512(d + kk, _mm512_permutexvar_epi16(idx, _mm512_maskz_loadu_epi16(mask, src + kk)));
    }
  }
}

// Clock ticks (TSC) for `iters` rounds of 16 independent vdpbf16ps (DOT) or
// vfmadd231ps chains; `sink` keeps the work.
template <bool DOT>
uint64_t ChainTicks(int iters, float* sink) {
  constexpr int kChains = 16;
  __m512 acc[kChains];
#pragma GCC unroll 16
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
  const __m512i ah = _mm512_set1_epi16(0x3f80), bh = _mm512_set1_epi16(0x3a83);  // 1.0, ~0.001
  const uint64_t t0 = __rdtsc();
  for (int it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = DOT ? Dot(acc[c], ah, bh) : _mm512_fmadd_ps(acc[c], a, b);
  }
  const uint64_t t1 = __rdtsc();
  __m512 total = acc[0];
  for (int c = 1; c < kChains; ++c) total = _mm512_add_ps(total, acc[c]);
  *sink += _mm512_reduce_add_ps(total);
  return t1 - t0;
}

}  // namespace

double Bf16DotMacRateOverFma() {
  float sink = 0.0f;
  uint64_t dot = ~uint64_t{0}, fma = ~uint64_t{0};
  // Best of a few short runs: the first ones also wake the 512-bit units.
  for (int t = 0; t < 6; ++t) {
    const uint64_t d = ChainTicks<true>(2048, &sink), f = ChainTicks<false>(2048, &sink);
    dot = d < dot ? d : dot;
    fma = f < fma ? f : fma;
  }
  volatile float keep = sink;
  (void)keep;
  // Multiply-adds per tick: 32 a vdpbf16ps, 16 a vfmadd231ps.
  return dot == 0 ? 0.0 : (32.0 / static_cast<double>(dot)) / (16.0 / static_cast<double>(fma == 0 ? 1 : fma));
}

void MatMulAvx512Bf16(const MatMulArgs& a) {
  const int64_t kp = (a.k + 31) / 32 * 32;
  const int64_t ldw = a.row_stride;
  const auto* w = static_cast<const uint16_t*>(a.w);
  uint16_t* xs = XScratch(a.m * kp);
  const int64_t num_panels = (a.n + kNr - 1) / kNr;
  // Permuting once per panel pays off when more than one row tile reuses it.
  const bool pack = a.m > kMr;
  // Below this many multiply-adds a thread team costs more than it saves.
  const bool parallel = a.m * a.n * a.k >= (1 << 16);
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < a.m; ++i) RoundRow(a.x + i * a.k, a.k, kp, xs + i * kp);
    uint16_t* panel = pack ? PanelScratch(kNr * kp) : nullptr;
#pragma omp for schedule(static)
    for (int64_t p = 0; p < num_panels; ++p) {
      const int64_t r0 = p * kNr;
      const int64_t nr = Min(kNr, a.n - r0);
      const uint16_t* wp = w + r0 * ldw;
      const float* bias = a.bias != nullptr ? a.bias + r0 : nullptr;
      if (pack) {
        PermutePanel(wp, ldw, nr, a.k, kp, panel);
        for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
          const int64_t mr = Min(kMr, a.m - i0);
          kTiles[0][mr - 1][nr - 1](xs + i0 * kp, kp, panel, kp, a.k, kp, bias, a.y + i0 * a.n + r0, a.n, nullptr);
        }
      } else {
        // Prefetch the next panel during the last row tile over this one.
        const uint16_t* next = p + 1 < num_panels ? wp + kNr * ldw : nullptr;
        for (int64_t i0 = 0; i0 < a.m; i0 += kMr) {
          const int64_t mr = Min(kMr, a.m - i0);
          kTiles[1][mr - 1][nr - 1](xs + i0 * kp, kp, wp, ldw, a.k, kp, bias, a.y + i0 * a.n + r0, a.n,
                                    i0 + kMr >= a.m ? next : nullptr);
        }
      }
    }
  }
}

}  // namespace tandem::kernels::cpu
