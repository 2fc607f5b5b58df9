// BF16 MatMul on AMX tiles; compiled with -mamx-* and run only when
// ActiveCpuIsa() == kAmx. Numerics: matmul_kernels.h (BF16 section).
//
// Operand roles: the weight matrix W [n][k] is the tile "A" operand (a tile
// is 16 weight rows x 32 k values), read either in place from the memory
// mapping with the row stride (zero-padded copies for edge blocks) or, when
// the model packed it at load (MatMulArgs::amx_tiles, PackBf16ForAmx), from
// contiguous 2 KiB steps that stream without strided misses. The activations
// are the "B" operand, rounded to BF16 and packed into the pair-interleaved
// layout tdpbf16ps wants. A C tile holds y^T: 16 output features x 16 batch
// rows, transposed in registers on the way out.
//
// Blocking: a thread owns blocks of 32 weight rows (two A tiles) and, for
// each, walks the batch in pairs of 16-row groups (two B tiles, four C tiles),
// k in steps of 32 from 0 upwards. Every output is one C element accumulated
// over k in that order by tdpbf16ps, whatever the batch size, the block or the
// thread: batch-invariant. Decode (one 16-row group) prefetches the next
// weight block while the current one computes, like the AVX-512 kernel.
// Thread-safety: pure function; parallel inside (OpenMP). Tiles are
// configured and released by each thread inside the parallel region.
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "engine/kernels/cpu/matmul_kernels.h"
#include "engine/kernels/cpu/thread_scratch.h"

namespace tandem::kernels::cpu {
namespace {

constexpr int64_t kTileK = 32;    // BF16 values in one tile row (64 bytes)
constexpr int64_t kTileM = 16;    // batch rows per B tile (its pair columns)
constexpr int64_t kBlockN = 32;   // weight rows per block: two A tiles
constexpr int64_t kTileBytes = 1024;

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }

// The LDTILECFG memory operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Tiles 0-3: C (fp32 accumulators), 4-5: W, 6-7: packed x. All 16 x 64 bytes.
void ConfigureTiles() {
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}


uint16_t* PackScratch(int64_t bytes) {
  static thread_local ThreadScratch scratch;
  return static_cast<uint16_t*>(scratch.Get(static_cast<size_t>(bytes), /*zero_on_growth=*/true));
}

uint16_t* EdgeScratch(int64_t bytes) {
  static thread_local ThreadScratch scratch;
  return static_cast<uint16_t*>(scratch.Get(static_cast<size_t>(bytes), /*zero_on_growth=*/true));
}

// Packs batch rows [16g, 16g + 16) of x ([m][k] fp32) into xp: for each k
// step s, tile (g, s) is 16 rows of 16 pairs, row r holding for column c the
// pair x[16g + c][32s + 2r], x[16g + c][32s + 2r + 1] (rounded to nearest
// even), zero past k and for rows past m. That is a 16 x 16 transpose of
// 32-bit pairs: each batch row's 16 pairs of a step are one register, and
// Transpose16 turns the 16 registers into the tile's rows.
void Transpose16(__m512 r[16]);

void PackGroup(const float* x, int64_t g, int64_t m, int64_t k, int64_t num_steps, uint16_t* xp) {
  const int64_t rows = Min(kTileM, m - g * kTileM);
  for (int64_t s = 0; s < num_steps; ++s) {
    const int64_t k0 = s * kTileK;
    const int64_t left = k - k0;
    const __mmask16 mlo = static_cast<__mmask16>(left >= 16 ? 0xffff : (1u << left) - 1);
    const __mmask16 mhi = static_cast<__mmask16>(left >= 32 ? 0xffff : left <= 16 ? 0 : (1u << (left - 16)) - 1);
    __m512 v[16];
    for (int64_t c = 0; c < kTileM; ++c) {
      if (c >= rows) {
        v[c] = _mm512_setzero_ps();
        continue;
      }
      const float* row = x + (g * kTileM + c) * k + k0;
      const __m512 lo = _mm512_maskz_loadu_ps(mlo, row);
      const __m512 hi = _mm512_maskz_loadu_ps(mhi, row + 16);
      v[c] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(hi, lo));  // same bits, float view
    }
    Transpose16(v);
    uint16_t* tile = xp + (g * num_steps + s) * (kTileBytes / 2);
    for (int r = 0; r < 16; ++r) _mm512_storeu_ps(reinterpret_cast<float*>(tile) + 16 * r, v[r]);
  }
}

// In-register transpose of a 16 x 16 fp32 block (rows r[0..15]).
void Transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4q + j] holds, per 128-bit lane g, rows 4q..4q+3 of column 4g + j.
  for (int q = 0; q < 4; ++q) {
    u[4 * q + 0] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0x44);
    u[4 * q + 1] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0xee);
    u[4 * q + 2] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0x44);
    u[4 * q + 3] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0xee);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 v = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
    const __m512 w = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xdd);
    const __m512 x = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    const __m512 y = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xdd);
    r[j] = _mm512_shuffle_f32x4(v, x, 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(v, x, 0xdd);
    r[4 + j] = _mm512_shuffle_f32x4(w, y, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(w, y, 0xdd);
  }
}

// Writes a stored C tile `c` (16 weight rows from n0 x 16 batch rows from m0)
// to y with the bias, keeping rows < n and batch rows < m.
void StoreC(const float* c, float* y, int64_t ldy, int64_t m0, int64_t m, int64_t n0, int64_t n,
            const float* bias) {
  if (n0 >= n || m0 >= m) return;
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(c + 16 * i);
  Transpose16(r);
  const int64_t cols = Min(16, n - n0);
  const __mmask16 mask = static_cast<__mmask16>(cols == 16 ? 0xffff : (1u << cols) - 1);
  const __m512 b = bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
  const int64_t rows = Min(16, m - m0);
  for (int64_t i = 0; i < rows; ++i) _mm512_mask_storeu_ps(y + (m0 + i) * ldy + n0, mask, _mm512_add_ps(r[i], b));
}

// Tile numbers must be literals: the intrinsics paste them into assembly.
#define TANDEM_STORE_C(tile, m0, n0)              \
  do {                                            \
    _tile_stored(tile, cbuf, 64);                 \
    StoreC(cbuf, y, n, m0, m, n0, n, bias);       \
  } while (0)

// One block of 32 weight rows against every batch row group. Weight row r
// of k step s is at w + s * step + r * ldw: in place, step = 64 bytes and ldw
// = the matrix's row stride; packed (PackBf16ForAmx), step = 2 KiB and ldw =
// 64. `next` (may be null) is the next block, prefetched line by line as this
// one streams.
void Block(const char* w, int64_t ldw, int64_t step, const uint16_t* xp, int64_t num_steps, int64_t m,
           int64_t n0, int64_t n, const float* bias, float* y, const char* next) {
  const int64_t groups = (m + kTileM - 1) / kTileM;
  const char* w1 = w + 16 * ldw;
  alignas(64) float cbuf[16 * 16];
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const uint16_t* b0 = xp + g * num_steps * (kTileBytes / 2);
    const uint16_t* b1 = b0 + num_steps * (kTileBytes / 2);
    // Software-pipelined: tile registers are not renamed, so each operand
    // tile of step s + 1 is loaded right after the last product that reads
    // its step-s contents, overlapping the loads with the remaining products
    // instead of serialising whole steps. Products run in the same order.
    _tile_loadd(4, w, ldw);
    _tile_loadd(6, b0, 64);
    _tile_loadd(5, w1, ldw);
    _tile_loadd(7, b1, 64);
    for (int64_t s = 0; s < num_steps; ++s) {
      if (next != nullptr && g == 0) {
        for (int r = 0; r < kBlockN; ++r) _mm_prefetch(next + r * ldw + s * step, _MM_HINT_T1);
      }
      const bool more = s + 1 < num_steps;
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 5, 6);
      if (more) _tile_loadd(6, b0 + (s + 1) * (kTileBytes / 2), 64);
      _tile_dpbf16ps(2, 4, 7);
      if (more) _tile_loadd(4, w + (s + 1) * step, ldw);
      _tile_dpbf16ps(3, 5, 7);
      if (more) {
        _tile_loadd(5, w1 + (s + 1) * step, ldw);
        _tile_loadd(7, b1 + (s + 1) * (kTileBytes / 2), 64);
      }
    }
    TANDEM_STORE_C(0, g * kTileM, n0);
    TANDEM_STORE_C(1, g * kTileM, n0 + 16);
    TANDEM_STORE_C(2, (g + 1) * kTileM, n0);
    TANDEM_STORE_C(3, (g + 1) * kTileM, n0 + 16);
  }
  if (g < groups) {
    _tile_zero(0);
    _tile_zero(1);
    const uint16_t* b0 = xp + g * num_steps * (kTileBytes / 2);
    // Pipelined like the pair loop above.
    _tile_loadd(4, w, ldw);
    _tile_loadd(6, b0, 64);
    _tile_loadd(5, w1, ldw);
    for (int64_t s = 0; s < num_steps; ++s) {
      if (next != nullptr) {
        for (int r = 0; r < kBlockN; ++r) _mm_prefetch(next + r * ldw + s * step, _MM_HINT_T1);
      }
      const bool more = s + 1 < num_steps;
      _tile_dpbf16ps(0, 4, 6);
      if (more) _tile_loadd(4, w + (s + 1) * step, ldw);
      _tile_dpbf16ps(1, 5, 6);
      if (more) {
        _tile_loadd(6, b0 + (s + 1) * (kTileBytes / 2), 64);
        _tile_loadd(5, w1 + (s + 1) * step, ldw);
      }
    }
    TANDEM_STORE_C(0, g * kTileM, n0);
    TANDEM_STORE_C(1, g * kTileM, n0 + 16);
  }
}

#undef TANDEM_STORE_C

// Copies up to 32 weight rows into a zero-padded [32][kp] block (edges: the
// last rows of W, or a k that is not a multiple of 32), so tiles never read
// past the matrix.
void PadBlock(const char* w, int64_t ldw, int64_t rows, int64_t k, int64_t kp, uint16_t* dst) {
  std::memset(dst, 0, static_cast<size_t>(kBlockN * kp * 2));
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * kp, w + r * ldw, static_cast<size_t>(k * 2));
}

}  // namespace

void MatMulAmxBf16(const MatMulArgs& a) {
  const int64_t num_steps = (a.k + kTileK - 1) / kTileK;
  const int64_t kp = num_steps * kTileK;
  const int64_t groups = (a.m + kTileM - 1) / kTileM;
  const int64_t ldw = a.row_stride * 2;
  const int64_t num_blocks = (a.n + kBlockN - 1) / kBlockN;
  uint16_t* xp = PackScratch(groups * num_steps * kTileBytes);
  const bool k_even = a.k % kTileK == 0;
  // Below this many multiply-adds a thread team costs more than it saves.
  const bool parallel = a.m * a.n * a.k >= (1 << 16);
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t g = 0; g < groups; ++g) PackGroup(a.x, g, a.m, a.k, num_steps, xp);
    // (implicit barrier: every row is packed before any block reads them)
    ConfigureTiles();
    uint16_t* edge = nullptr;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < num_blocks; ++blk) {
      const int64_t n0 = blk * kBlockN;
      const int64_t rows = Min(kBlockN, a.n - n0);
      const char* w = static_cast<const char*>(a.w) + n0 * ldw;
      const float* bias = a.bias;
      if (a.amx_tiles != nullptr) {  // packed: every block whole and contiguous, edges zero-padded
        const int64_t block_bytes = num_steps * kBlockN * kTileK * 2;
        const char* pw = reinterpret_cast<const char*>(a.amx_tiles) + blk * block_bytes;
        Block(pw, 64, kBlockN * 64, xp, num_steps, a.m, n0, a.n, bias, a.y,
              blk + 1 < num_blocks ? pw + block_bytes : nullptr);
      } else if (rows == kBlockN && k_even) {
        const bool has_next = blk + 1 < num_blocks && a.n - (n0 + kBlockN) >= kBlockN;
        Block(w, ldw, 64, xp, num_steps, a.m, n0, a.n, bias, a.y, has_next ? w + kBlockN * ldw : nullptr);
      } else {
        if (edge == nullptr) edge = EdgeScratch(kBlockN * kp * 2);
        PadBlock(w, ldw, rows, a.k, kp, edge);
        Block(reinterpret_cast<const char*>(edge), kp * 2, 64, xp, num_steps, a.m, n0, a.n, bias, a.y, nullptr);
      }
    }
    _tile_release();
  }
}

}  // namespace tandem::kernels::cpu
