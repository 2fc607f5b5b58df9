// MatMul for AVX2 + FMA + F16C (the baseline every supported CPU runs).
// Numerics: matmul_kernels.h. The 16 shared lanes are two ymm registers per
// output, each lane running the same fma chain as the AVX-512 kernel's, so
// both give the same bits. Which lanes sit in which register differs:
//  - F32/F16 weights, natural layout: lo = lanes 0-7, hi = lanes 8-15.
//  - BF16 weights, split layout: lo = even lanes (0, 2, ..., 14), hi = odd
//    lanes. Sixteen BF16 weights are one 256-bit load, and each half widens
//    in place with one instruction (even: shift left 16; odd: mask the low
//    16 bits off), where the natural layout needs two 128-bit loads and a
//    zero-extend + shift per half on the shuffle ports (from L2, one Zen 3
//    core's batch-1 rate went 35 -> 42 GB/s). x is de-interleaved to match
//    once per call (a few KiB), and TreeSplit adds the lanes in the same
//    pairs as Tree.
//
// Tiling mirrors matmul_avx512.cc with a smaller register tile (16 ymm
// registers): panels of kNr weight rows, kMr batch rows per tile; a thread
// takes a contiguous range of panels.
//  - Up to kMr batch rows (batch-1 decode): weights are widened in registers
//    as they stream in. A dense matrix's panels are one block of memory per
//    thread, read ahead in memory order (kPrefetchAhead): Zen 3's hardware
//    prefetcher does not follow kNr short row streams, and batch-1 decode
//    read weights at 9-10 GB/s per core instead of 15-20.
//  - More rows: the first row tile over a BF16/F16 panel widens it as it
//    goes, stores the fp32 rows in an L1-resident scratch the panel's other
//    row tiles read, and reads ahead (as on AVX-512; a separate widening
//    pass first left the tiles waiting on memory). x is taken in blocks of
//    rows that stay in L2 (Run).
// Thread-safety: pure function; parallel inside (OpenMP); the de-interleaved
// x lives in the calling thread's scratch and is only read by the team.
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

// How far ahead of a panel a dense weight stream is prefetched (bytes): past
// the hardware prefetcher's reach, well within L2. Measured on Zen 3: 4.5-7
// KiB best for 1152-byte rows; less leaves lines late, more evicts them.
constexpr int64_t kPrefetchAhead = 6144;

// Batch-row blocking (see Run): x's block is at most this big, or
// kMinBlockRows rows.
constexpr int64_t kXBlockBytes = 192 * 1024;
constexpr int64_t kMinBlockRows = 32;

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t Max(int64_t a, int64_t b) { return a > b ? a : b; }

// 8 weights from element k of `row` as fp32 (natural layout).
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

// Split layout: the even (H = 0) or odd (H = 1) weights of the 16 BF16
// values at `p`, as fp32. A BF16 value is the top half of its fp32.
template <int H>
inline __m256 LoadSplitBf16(const char* p) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if constexpr (H == 0) return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
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

// The same tree over the split layout (even = lanes 0, 2, ..., 14; odd =
// lanes 1, 3, ..., 15), pair by pair: lane l + (l+8) is element i + (i+4) of
// one register; then + (l+4) is i + (i+2) of that sum; + (l+2) pairs the
// even sums and the odd sums among themselves; + (l+1) adds the two.
inline float TreeSplit(__m256 even, __m256 odd) {
  __m128 e = _mm_add_ps(_mm256_castps256_ps128(even), _mm256_extractf128_ps(even, 1));
  __m128 o = _mm_add_ps(_mm256_castps256_ps128(odd), _mm256_extractf128_ps(odd, 1));
  e = _mm_add_ps(e, _mm_movehl_ps(e, e));  // lanes 0+4, 2+6 (of the 8 sums)
  o = _mm_add_ps(o, _mm_movehl_ps(o, o));  // lanes 1+5, 3+7
  const __m128 t = _mm_unpacklo_ps(e, o);  // (0+4), (1+5), (2+6), (3+7)
  const __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
  return _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)));
}

// y[i][j] = x[i] . w[j] (+ bias[j]) for an MR x NR tile.
// SPLIT: the split layout; x rows are de-interleaved and zero-padded to a
// multiple of 16, and so are the rows of `widened`.
// `pf` (may be null): weight bytes to prefetch while this tile walks k.
//  - pf_ld == 0: a contiguous run, NR * 32 bytes per group of 16 (dense
//    weights, where a thread's panels are one block of memory: read ahead
//    in memory order, the stream the hardware prefetcher follows worst is
//    NR rows of a few cache lines each; 12 instead of 10 GB/s per Zen 3 core).
//  - else NR rows `pf_ld` bytes apart: one cache line per row per 32
//    elements (the next panel of a strided weight view).
// STORE: also write each widened weight vector to `widened` ([NR][wld] fp32).
template <int MR, int NR, int WT, bool SPLIT, bool STORE>
void Tile(const float* x, int64_t ldx, const char* w, int64_t ldw_bytes, int64_t k, const float* bias,
          float* y, int64_t ldy, const char* pf, int64_t pf_ld, float* widened, int64_t wld) {
  __m256 acc[2][MR][NR];
#pragma GCC unroll 32
  for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) acc[h][i][j] = _mm256_setzero_ps();
    }
  }
  // The 16 weights of group kk, half h, as fp32 in this tile's layout.
  auto weights = [&](const char* row, int64_t kk, int h) {
    if constexpr (SPLIT && WT == kBF16) {
      return h == 0 ? LoadSplitBf16<0>(row + 2 * kk) : LoadSplitBf16<1>(row + 2 * kk);
    } else {
      return Load8<WT>(row, kk + 8 * h);
    }
  };
  const int64_t k16 = k / 16 * 16;
  for (int64_t kk = 0; kk < k16; kk += 16) {
    if (pf != nullptr) {
      if (pf_ld == 0) {
        // The cache lines that start in this group's NR * 32 bytes.
        const uintptr_t lo = reinterpret_cast<uintptr_t>(pf) + NR * 2 * kk;
        for (uintptr_t line = (lo + 63) & ~uintptr_t{63}; line < lo + NR * 32; line += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T0);
        }
      } else if ((kk & 31) == 0) {
#pragma GCC unroll 32
        for (int j = 0; j < NR; ++j) _mm_prefetch(pf + j * pf_ld + 2 * kk, _MM_HINT_T0);
      }
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256 xv[MR];
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) xv[i] = _mm256_loadu_ps(x + i * ldx + kk + 8 * h);
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) {
        const __m256 wv = weights(w + j * ldw_bytes, kk, h);
        if constexpr (STORE) _mm256_storeu_ps(widened + j * wld + kk + 8 * h, wv);
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) acc[h][i][j] = _mm256_fmadd_ps(xv[i], wv, acc[h][i][j]);
      }
    }
  }
  if (k16 < k) {
    // The last partial group, zero-padded (split: x is padded already).
    const int64_t n = k - k16;
    float xt[MR][16];
    float wt[NR][16];
    for (int i = 0; i < MR; ++i) {
      if constexpr (SPLIT) {
        std::memcpy(xt[i], x + i * ldx + k16, sizeof(xt[i]));
      } else {
        TailToFloat<kF32>(reinterpret_cast<const char*>(x + i * ldx), k16, n, xt[i]);
      }
    }
    for (int j = 0; j < NR; ++j) {
      if constexpr (SPLIT && WT == kBF16) {
        uint16_t wb[16] = {};
        std::memcpy(wb, w + j * ldw_bytes + 2 * k16, n * sizeof(uint16_t));
        _mm256_storeu_ps(wt[j], LoadSplitBf16<0>(reinterpret_cast<const char*>(wb)));
        _mm256_storeu_ps(wt[j] + 8, LoadSplitBf16<1>(reinterpret_cast<const char*>(wb)));
      } else {
        TailToFloat<WT>(w + j * ldw_bytes, k16, n, wt[j]);
      }
      // Split rows are padded to the whole group (the later tiles read it).
      if constexpr (STORE) std::memcpy(widened + j * wld + k16, wt[j], (SPLIT ? 16 : n) * sizeof(float));
    }
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
      const float sum = SPLIT ? TreeSplit(acc[0][i][j], acc[1][i][j]) : Tree(acc[0][i][j], acc[1][i][j]);
      y[i * ldy + j] = sum + (bias != nullptr ? bias[j] : 0.0f);
    }
  }
}

using TileFn = void (*)(const float*, int64_t, const char*, int64_t, int64_t, const float*, float*, int64_t,
                       const char*, int64_t, float*, int64_t);

template <int WT, bool SPLIT, bool STORE, int MR, int... NRs>
constexpr void FillRow(TileFn* row, std::integer_sequence<int, NRs...>) {
  ((row[NRs] = &Tile<MR, NRs + 1, WT, SPLIT, STORE>), ...);
}

// table[mr - 1][nr - 1] for every edge-tile size.
template <int WT, bool SPLIT, bool STORE>
struct TileTable {
  TileFn fn[kMr][kNr];
  constexpr TileTable() : fn() {
    FillRow<WT, SPLIT, STORE, 1>(fn[0], std::make_integer_sequence<int, kNr>());
    FillRow<WT, SPLIT, STORE, 2>(fn[1], std::make_integer_sequence<int, kNr>());
  }
};

template <int WT, bool SPLIT, bool STORE = false>
constexpr TileTable<WT, SPLIT, STORE> kTiles{};

float* PanelScratch(int64_t floats) {
  static thread_local ThreadScratch scratch;
  return static_cast<float*>(scratch.Get(static_cast<size_t>(floats) * sizeof(float)));
}

// x's rows de-interleaved for the split layout: per group of 16, the even
// elements then the odd ones; the last group zero-padded. Rows `ld` apart.
const float* SplitX(const float* x, int64_t m, int64_t k, int64_t ld) {
  static thread_local ThreadScratch scratch;
  float* out = static_cast<float*>(scratch.Get(static_cast<size_t>(m * ld) * sizeof(float)));
  const int64_t k16 = k / 16 * 16;
  for (int64_t i = 0; i < m; ++i) {
    const float* src = x + i * k;
    float* dst = out + i * ld;
    for (int64_t kk = 0; kk < ld; kk += 16) {
      float padded[16];
      const float* g = src + kk;
      if (kk >= k16) {
        for (int e = 0; e < 16; ++e) padded[e] = kk + e < k ? src[kk + e] : 0.0f;
        g = padded;
      }
      const __m256 a = _mm256_loadu_ps(g), b = _mm256_loadu_ps(g + 8);
      // Within each 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6; then reorder the
      // 64-bit quarters to a0 a2 a4 a6 b0 b2 b4 b6.
      const __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
      const __m256 odd = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
      _mm256_storeu_ps(dst + kk, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xd8)));
      _mm256_storeu_ps(dst + kk + 8, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(odd), 0xd8)));
    }
  }
  return out;
}

// Rows m0..m1 of y over panel p (kNr weight rows). x: `ldx` floats per row,
// in the weights' layout; scratch: this thread's [kNr][ldx] fp32 panel.
template <int WT>
void RunPanel(const MatMulArgs& a, const float* x, int64_t ldx, int64_t p, int64_t m0, int64_t m1, bool widen,
              bool dense, float* scratch) {
  constexpr bool kSplit = WT == kBF16;
  constexpr int64_t kElem = WT == kF32 ? 4 : 2;
  const int64_t ldw = a.row_stride * kElem;
  const int64_t num_panels = (a.n + kNr - 1) / kNr;
  const int64_t r0 = p * kNr;
  const int64_t nr = Min(kNr, a.n - r0);
  const char* wp = static_cast<const char*>(a.w) + r0 * ldw;
  const float* bias = a.bias != nullptr ? a.bias + r0 : nullptr;
  // What to prefetch over this panel (16-bit weights only: the offsets
  // assume 2-byte elements). Dense: the bytes kPrefetchAhead past this
  // panel's start, at least the next panel (none past the matrix).
  // Strided: the next panel's rows.
  const char* pf = nullptr;
  int64_t pf_ld = 0;
  if (WT != kF32 && dense) {
    const int64_t ahead = Max(kNr * ldw, kPrefetchAhead);
    if ((r0 + nr) * ldw + ahead <= a.n * ldw) pf = wp + ahead;
  } else if (WT != kF32 && p + 1 < num_panels && a.k <= ldw / 2) {
    pf = wp + kNr * ldw;
    pf_ld = ldw;
  }
  for (int64_t i0 = m0; i0 < m1; i0 += kMr) {
    const int64_t mr = Min(kMr, m1 - i0);
    const float* xi = x + i0 * ldx;
    float* y = a.y + i0 * a.n + r0;
    if (!widen) {
      // Prefetch during the last row tile over this panel.
      kTiles<WT, kSplit>.fn[mr - 1][nr - 1](xi, ldx, wp, ldw, a.k, bias, y, a.n,
                                            i0 + kMr >= m1 ? pf : nullptr, pf_ld, nullptr, 0);
    } else if (i0 == m0) {
      kTiles<WT, kSplit, true>.fn[mr - 1][nr - 1](xi, ldx, wp, ldw, a.k, bias, y, a.n, pf, pf_ld, scratch,
                                                  ldx);
    } else {
      // The scratch rows hold whole zero-padded groups in either layout
      // (natural: ldx = k, so no padding), so the fp32 tile runs to ldx.
      kTiles<kF32, kSplit>.fn[mr - 1][nr - 1](xi, ldx, reinterpret_cast<const char*>(scratch), ldx * 4,
                                              kSplit ? ldx : a.k, bias, y, a.n, nullptr, 0, nullptr, 0);
    }
  }
}

template <int WT>
void Run(const MatMulArgs& a) {
  constexpr bool kSplit = WT == kBF16;
  constexpr int64_t kElem = WT == kF32 ? 4 : 2;
  const int64_t ldw = a.row_stride * kElem;
  const int64_t num_panels = (a.n + kNr - 1) / kNr;
  const bool dense = ldw == a.k * kElem;
  // Split layout: x de-interleaved, rows padded to whole groups of 16.
  const int64_t ldx = kSplit ? (a.k + 15) / 16 * 16 : a.k;
  const float* x = kSplit ? SplitX(a.x, a.m, a.k, ldx) : a.x;
  // Widening once per panel pays off when more than one row tile reuses it.
  const bool widen = WT != kF32 && a.m > kMr;
  // Batch rows per block: every panel passes over one block of x before the
  // next, so x's block stays in L2 (a prefill's whole x does not: 256 rows
  // of 576 floats are 590 KB, and each panel would read it from L3). Never
  // under kMinBlockRows, so a decode batch is one block and the weights
  // stream from memory once.
  const int64_t mb = Max(kMinBlockRows, kXBlockBytes / (ldx * 4)) / kMr * kMr;
  // Below this many multiply-adds a thread team costs more than it saves.
  const bool parallel = a.m * a.n * a.k >= (1 << 16);
#pragma omp parallel if (parallel)
  {
    float* scratch = widen ? PanelScratch(kNr * ldx) : nullptr;
    for (int64_t m0 = 0; m0 < a.m; m0 += mb) {
      const int64_t m1 = Min(a.m, m0 + mb);
      // nowait: a thread takes the same panels in every block, and blocks
      // write disjoint rows of y.
#pragma omp for schedule(static) nowait
      for (int64_t p = 0; p < num_panels; ++p) {
        RunPanel<WT>(a, x, ldx, p, m0, m1, widen, dense, scratch);
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
