// Paged causal attention on the CPU: the driver, the AVX2 chunk kernel, and
// WriteKv. Numerics (shared by every path and ISA): cpu/attention_kernels.h.
//
// Shape of the work: an item is (sequence, KV head, tile of that sequence's
// query tokens); it walks the 16-key chunks its tokens can see, in position
// order, and for each chunk runs every query row of the tile (tokens x the
// query heads of the KV head) against the chunk's K/V rows while they sit in
// L1. So K/V are read from memory once per item, not once per query head,
// and a 1-token decode item is the same loop with one token. BF16/F16 rows are
// widened to fp32 (exactly) without ConvertToFloat: once per chunk into an L1
// scratch, or in registers as they are used when the chunk has only a few
// query rows (AVX-512 decode). Items run in parallel (OpenMP) when the batch
// is big enough to pay for the thread team; no item's result depends on which
// thread runs it or on the other items.
// Thread-safety: pure functions over caller-owned buffers; parallel inside.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/base/internal/raw_logging.h"
#include "engine/kernels/cpu/attention_kernels.h"
#include "engine/kernels/cpu/kv_quantize.h"
#include "engine/kernels/ops.h"
#include "engine/kernels/paged_attention.h"

namespace tandem::kernels {
namespace cpu {
namespace {

// --- The AVX2 chunk kernel: 16 shared lanes as two ymm halves (lo = lanes
// 0-7, hi = 8-15), running the same operations as paged_attention_avx512.cc.

inline __m256 Exp8(__m256 x) {
  const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(kExpMin), _CMP_LT_OQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(kExpMin));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kExpC1), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kExpC2), r);
  __m256 p = _mm256_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPoly[i]));
  __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

inline float Tree(__m256 lo, __m256 hi) {
  const __m256 s8 = _mm256_add_ps(lo, hi);
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

inline float MaxTree(__m256 lo, __m256 hi) {
  const __m256 s8 = _mm256_max_ps(lo, hi);
  const __m128 s4 = _mm_max_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_max_ss(s2, _mm_movehdup_ps(s2)));
}

inline float Dot(const float* q, const float* row, int64_t nc) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  for (int64_t c = 0; c < nc; ++c) {
    lo = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16 * c), _mm256_loadu_ps(row + 16 * c), lo);
    hi = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16 * c + 8), _mm256_loadu_ps(row + 16 * c + 8), hi);
  }
  return Tree(lo, hi);
}

// acc[0, 16 NC) = acc * alpha, then acc += e[j] *
// rows[j][col, col + 16 NC) for j in [jb, je).
template <int NC>
inline void AccumulateV(float* acc, int64_t col, float alpha, const float* e, const float* const* rows, int jb,
                        int je) {
  __m256 o[2 * NC];
  for (int c = 0; c < 2 * NC; ++c) o[c] = _mm256_loadu_ps(acc + 8 * c);
  for (int c = 0; c < 2 * NC; ++c) o[c] = _mm256_mul_ps(o[c], _mm256_set1_ps(alpha));
  for (int j = jb; j < je; ++j) {
    const __m256 w = _mm256_set1_ps(e[j]);
    for (int c = 0; c < 2 * NC; ++c) o[c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(rows[j] + col + 8 * c), o[c]);
  }
  for (int c = 0; c < 2 * NC; ++c) _mm256_storeu_ps(acc + 8 * c, o[c]);
}

// 8 one-byte codes as fp32: int8 as integers, fp8 (E4M3) as value / 256
// through binary16 (attention_kernels.h).
inline __m256 WidenCodes8(const uint8_t* src, int type) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
  if (type == static_cast<int>(DType::kI8)) return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
  // Sign-extended and shifted up by 7, a code's bits 0-6 are the binary16's
  // exponent and mantissa and its sign lands on bit 15; bit 14 (a copy of
  // the sign) is cleared.
  const __m128i half =
      _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(bytes), 7), _mm_set1_epi16(static_cast<short>(0xbf80)));
  return _mm256_cvtph_ps(half);
}

// Widens (exactly) and zero-pads one row of head_dim elements to padded_dim
// floats: BF16 in pair-split order (attention_kernels.h), other types in
// element order.
void WidenRow(const void* src, int type, int64_t head_dim, int64_t padded_dim, float* dst) {
  const bool f32 = type == static_cast<int>(DType::kF32);
  int64_t d = 0;
  if (type == static_cast<int>(DType::kI8) || type == static_cast<int>(DType::kF8E4M3)) {
    for (; d < padded_dim; d += 8) {
      const int64_t n = std::clamp<int64_t>(head_dim - d, 0, 8);
      uint8_t c[8] = {};  // zero codes widen to zero in both formats
      const uint8_t* from = static_cast<const uint8_t*>(src) + d;
      if (n < 8) from = static_cast<const uint8_t*>(std::memcpy(c, from, n));
      _mm256_storeu_ps(dst + d, WidenCodes8(from, type));
    }
    return;
  }
  if (type == static_cast<int>(DType::kBF16)) {
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    for (; d + 32 <= padded_dim; d += 32) {
      const int64_t n = std::clamp<int64_t>(head_dim - d, 0, 32);
      uint16_t h[32] = {};
      const uint16_t* from = static_cast<const uint16_t*>(src) + d;
      if (n < 32) from = static_cast<const uint16_t*>(std::memcpy(h, from, n * sizeof(uint16_t)));
      for (int half = 0; half < 2; ++half) {  // elements [16 half, 16 half + 16): positions 8 half.. of each side
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + 16 * half));
        _mm256_storeu_ps(dst + d + 8 * half, _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)));
        _mm256_storeu_ps(dst + d + 16 + 8 * half, _mm256_castsi256_ps(_mm256_and_si256(x, high)));
      }
    }
  }
  for (; d < padded_dim; d += 8) {
    const int64_t n = std::clamp<int64_t>(head_dim - d, 0, 8);
    if (f32) {
      float f[8] = {};
      const float* from = static_cast<const float*>(src) + d;
      if (n < 8) from = static_cast<const float*>(std::memcpy(f, from, n * sizeof(float)));
      _mm256_storeu_ps(dst + d, _mm256_loadu_ps(from));
      continue;
    }
    uint16_t h[8] = {};
    const uint16_t* from = static_cast<const uint16_t*>(src) + d;
    if (n < 8) from = static_cast<const uint16_t*>(std::memcpy(h, from, n * sizeof(uint16_t)));
    const __m128i hv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from));
    _mm256_storeu_ps(dst + d, type == static_cast<int>(DType::kBF16)
                                  ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(hv), 16))
                                  : _mm256_cvtph_ps(hv));
  }
}

void PrepareRows(const AttnChunkArgs& a, const float** k, const float** v) {
  const bool direct = a.kv_dtype == static_cast<int>(DType::kF32) && a.head_dim == a.padded_dim;
  for (int j = a.lane_begin; j < a.lane_end; ++j) {
    if (direct) {
      k[j] = static_cast<const float*>(a.k_rows[j]);
      v[j] = static_cast<const float*>(a.v_rows[j]);
    } else {
      float* kd = a.scratch + j * a.padded_dim;
      float* vd = a.scratch + kScratchVOffset(a.padded_dim) + j * a.padded_dim;
      WidenRow(a.k_rows[j], a.kv_dtype, a.head_dim, a.padded_dim, kd);
      WidenRow(a.v_rows[j], a.kv_dtype, a.head_dim, a.padded_dim, vd);
      k[j] = kd;
      v[j] = vd;
    }
  }
}

}  // namespace

// The same three passes as the AVX-512 kernel; the passes are a speed
// choice, each row's operations are the shared order either way.
void AttendChunkAvx2(const AttnChunkArgs& a) {
  const float* k[kAttnChunk];
  const float* v[kAttnChunk];
  PrepareRows(a, k, v);
  const int64_t nc = a.padded_dim / 16;
  const int64_t state_stride = kStateHeader + a.padded_dim;
  auto lanes = [&](int64_t t, int* jb, int* je) {
    *jb = static_cast<int>(std::max<int64_t>(a.first_key[t], a.chunk_pos) - a.chunk_pos);
    *je = static_cast<int>(std::min<int64_t>(a.last_key[t] + 1, a.chunk_pos + kAttnChunk) - a.chunk_pos);
  };
  int jb, je;
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    lanes(t, &jb, &je);
    for (int64_t row = t * a.group; jb < je && row < (t + 1) * a.group; ++row) {
      float* s = a.scores + row * kAttnChunk;
      for (int j = 0; j < kAttnChunk; ++j) {
        s[j] = j >= jb && j < je ? Dot(a.q + row * a.padded_dim, k[j], nc) * a.k_mul[j] : -INFINITY;
      }
    }
  }
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    lanes(t, &jb, &je);
    for (int64_t row = t * a.group; jb < je && row < (t + 1) * a.group; ++row) {
      float* st = a.state + row * state_stride;
      float* s = a.scores + row * kAttnChunk;
      const __m256 s_lo = _mm256_loadu_ps(s), s_hi = _mm256_loadu_ps(s + 8);
      const float m_old = st[0];
      const float chunk_max = MaxTree(s_lo, s_hi);
      const float m_new = m_old > chunk_max ? m_old : chunk_max;
      const float alpha = _mm256_cvtss_f32(Exp8(_mm256_set1_ps(m_old - m_new)));
      const __m256 e_lo = Exp8(_mm256_sub_ps(s_lo, _mm256_set1_ps(m_new)));
      const __m256 e_hi = Exp8(_mm256_sub_ps(s_hi, _mm256_set1_ps(m_new)));
      st[0] = m_new;
      st[1] = __builtin_fmaf(st[1], alpha, Tree(e_lo, e_hi));
      st[2] = alpha;
      _mm256_storeu_ps(s, _mm256_mul_ps(e_lo, _mm256_loadu_ps(a.v_mul)));
      _mm256_storeu_ps(s + 8, _mm256_mul_ps(e_hi, _mm256_loadu_ps(a.v_mul + 8)));
    }
  }
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    lanes(t, &jb, &je);
    for (int64_t row = t * a.group; jb < je && row < (t + 1) * a.group; ++row) {
      float* st = a.state + row * state_stride;
      const float* e = a.scores + row * kAttnChunk;
      int64_t c = 0;
      for (; c + 4 <= nc; c += 4) AccumulateV<4>(st + kStateHeader + 16 * c, 16 * c, st[2], e, v, jb, je);
      for (; c < nc; ++c) AccumulateV<1>(st + kStateHeader + 16 * c, 16 * c, st[2], e, v, jb, je);
    }
  }
}

}  // namespace cpu

namespace {

// One unit of parallel work: a tile of one sequence's query tokens against
// one KV head.
struct Item {
  int32_t seq;
  int32_t kv_head;
  int32_t token_begin;  // flat batch indices [token_begin, token_end)
  int32_t token_end;
  int64_t cost;  // multiply-adds, for ordering and the threading threshold
};

constexpr int64_t kTileRows = 48;  // query rows (tokens x group heads) per item
// Below this many multiply-adds a thread team costs more than it saves.
constexpr int64_t kParallelWork = int64_t{1} << 18;

struct Scratch {
  std::vector<float> q, state, widen, scores;
  std::vector<int32_t> first, last;
};

int64_t FirstKey(int64_t pos, const AttentionShape& shape) {
  return shape.sliding_window > 0 ? std::max<int64_t>(0, pos + 1 - shape.sliding_window) : 0;
}

using ChunkKernel = void (*)(const cpu::AttnChunkArgs&);

// The head dimension a BF16 row's position `pos` holds in pair-split order
// (attention_kernels.h): in each whole group of 32 positions, the first 16
// are the group's even dimensions and the last 16 its odd ones; a trailing
// group of 16 keeps element order.
int64_t PositionDim(int64_t pos, int64_t padded_dim) {
  const int64_t base = pos / 32 * 32, i = pos % 32;
  if (base + 32 > padded_dim) return pos;
  return base + (i < 16 ? 2 * i : 2 * (i - 16) + 1);
}

// How many chunks ahead AttendItem asks for K/V rows: a decode chunk's
// compute (~0.2 us) is shorter than a DRAM miss, and each chunk's rows sit
// in a different block, so the hardware prefetcher cannot guess them.
// Measured (BM_PagedAttentionDecodeBf16Layers, one core): 2 ahead into L1
// beats 1 or 4, and adding L2 prefetches 4-12 chunks ahead did not help:
// a cache-resident KV (8 layers) runs at 13.6 GB/s, a DRAM-resident one (30
// layers) at 6.5-6.8 GB/s, the memory's rate for 2 KiB pieces here.
constexpr int64_t kPrefetchChunks = 2;

// Prefetches chunk c's K and V rows of `kv_head` (positions within [lo,
// hi]): one contiguous run of rows per block the chunk touches.
void PrefetchChunk(const KvCache& cache, int64_t layer, const std::vector<int32_t>& table, int64_t kv_head,
                   int64_t c, int64_t lo, int64_t hi, int64_t row_bytes) {
  const int64_t block_size = cache.shape().block_size;
  int64_t p = std::max(lo, c * cpu::kAttnChunk);
  const int64_t end = std::min(hi + 1, (c + 1) * cpu::kAttnChunk);
  while (p < end) {
    const int64_t block = p / block_size, offset = p % block_size;
    const int64_t rows = std::min(end - p, block_size - offset);
    const int64_t first_slot = table[block] * block_size;
    const char* k = static_cast<const char*>(cache.Key(layer, first_slot, kv_head)) + offset * row_bytes;
    const char* v = static_cast<const char*>(cache.Value(layer, first_slot, kv_head)) + offset * row_bytes;
    for (int64_t off = 0; off < rows * row_bytes; off += 64) {
      _mm_prefetch(k + off, _MM_HINT_T0);
      _mm_prefetch(v + off, _MM_HINT_T0);
    }
    if (cache.shape().dtype == DType::kI8) {  // the rows' scales: one line each for 16 tokens
      _mm_prefetch(reinterpret_cast<const char*>(cache.KeyScale(layer, first_slot + offset, kv_head)), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(cache.ValueScale(layer, first_slot + offset, kv_head)), _MM_HINT_T0);
    }
    p += rows;
  }
}

// Runs one item: gathers its query rows, walks its chunks, writes its output
// rows. `args` carries the call-wide fields; `sc` is this thread's scratch.
// `dims`: for each of the padded_dim positions, the head dimension it holds
// (-1: padding); null when positions are dimensions (not BF16).
void AttendItem(const Item& it, const ForwardBatch& batch, const KvCache& cache, int64_t layer,
                const AttentionShape& shape, const float* q, int64_t q_stride, float* out, ChunkKernel kernel,
                const int32_t* dims, KvHeadScales fp8_scales, cpu::AttnChunkArgs& args, Scratch& sc) {
  const int64_t hd = shape.head_dim, dim = args.padded_dim, group = args.group;
  const int64_t n = it.token_end - it.token_begin;
  const int64_t rows = n * group;
  const int64_t state_stride = cpu::kStateHeader + dim;
  sc.q.assign(rows * dim, 0.0f);  // zero padding past head_dim
  sc.state.assign(rows * state_stride, 0.0f);
  sc.scores.resize(rows * cpu::kAttnChunk);
  sc.first.resize(n);
  sc.last.resize(n);
  int64_t lo = INT64_MAX, hi = -1;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t token = it.token_begin + t;
    const int64_t pos = batch.positions[token];
    sc.first[t] = static_cast<int32_t>(FirstKey(pos, shape));
    sc.last[t] = static_cast<int32_t>(pos);
    lo = std::min<int64_t>(lo, sc.first[t]);
    hi = std::max(hi, pos);
    for (int64_t g = 0; g < group; ++g) {
      const float* src = q + token * q_stride + (it.kv_head * group + g) * hd;
      float* dst = &sc.q[(t * group + g) * dim];
      if (dims != nullptr) {
        for (int64_t pos = 0; pos < dim; ++pos) {
          if (dims[pos] >= 0) dst[pos] = src[dims[pos]];
        }
      } else {
        std::memcpy(dst, src, hd * sizeof(float));
      }
      sc.state[(t * group + g) * state_stride] = -INFINITY;  // m
    }
  }
  args.num_tokens = n;
  args.q = sc.q.data();
  args.first_key = sc.first.data();
  args.last_key = sc.last.data();
  args.state = sc.state.data();
  args.scores = sc.scores.data();

  const int64_t block_size = cache.shape().block_size;
  const int64_t row_bytes = hd * static_cast<int64_t>(DTypeSize(cache.shape().dtype));
  const std::vector<int32_t>& table = batch.seqs[it.seq].block_table;
  // Per-key multipliers (attention_kernels.h): fixed for the item unless
  // every int8 row brings its own scales.
  const bool per_token_scales = cache.shape().dtype == DType::kI8;
  float k_mul = shape.scale, v_mul = 1.0f;
  if (cache.shape().dtype == DType::kF8E4M3) {
    // 256: the codes widen to E4M3 value / 256.
    k_mul = fp8_scales.k[it.kv_head] * 256.0f * shape.scale;
    v_mul = fp8_scales.v[it.kv_head] * 256.0f;
  }
  for (int j = 0; j < cpu::kAttnChunk; ++j) {
    args.k_mul[j] = k_mul;
    args.v_mul[j] = v_mul;
  }
  for (int64_t c = lo / cpu::kAttnChunk; c < lo / cpu::kAttnChunk + kPrefetchChunks; ++c) {
    PrefetchChunk(cache, layer, table, it.kv_head, c, lo, hi, row_bytes);
  }
  for (int64_t c = lo / cpu::kAttnChunk; c <= hi / cpu::kAttnChunk; ++c) {
    const int64_t chunk_pos = c * cpu::kAttnChunk;
    const int64_t begin = std::max(lo, chunk_pos), end = std::min(hi + 1, chunk_pos + cpu::kAttnChunk);
    // Rows of one head are contiguous within a block (kv_cache.h layout), so
    // only a block change needs an address computation.
    int64_t block = begin / block_size, offset = begin % block_size;
    const uint8_t* k_base = nullptr;
    const uint8_t* v_base = nullptr;
    const float* k_scales = nullptr;
    const float* v_scales = nullptr;
    for (int64_t p = begin; p < end; ++p, ++offset) {
      if (offset == block_size) {
        offset = 0;
        ++block;
      }
      if (p == begin || offset == 0) {
        const int64_t first_slot = table[block] * block_size;
        k_base = static_cast<const uint8_t*>(cache.Key(layer, first_slot, it.kv_head));
        v_base = static_cast<const uint8_t*>(cache.Value(layer, first_slot, it.kv_head));
        if (per_token_scales) {
          k_scales = cache.KeyScale(layer, first_slot, it.kv_head);
          v_scales = cache.ValueScale(layer, first_slot, it.kv_head);
        }
      }
      args.k_rows[p - chunk_pos] = k_base + offset * row_bytes;
      args.v_rows[p - chunk_pos] = v_base + offset * row_bytes;
      if (per_token_scales) {
        args.k_mul[p - chunk_pos] = k_scales[offset] * shape.scale;
        args.v_mul[p - chunk_pos] = v_scales[offset];
      }
    }
    args.chunk_pos = chunk_pos;
    args.lane_begin = static_cast<int>(begin - chunk_pos);
    args.lane_end = static_cast<int>(end - chunk_pos);
    PrefetchChunk(cache, layer, table, it.kv_head, c + kPrefetchChunks, lo, hi, row_bytes);
    kernel(args);
  }

  const int64_t out_stride = shape.num_heads * hd;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t g = 0; g < group; ++g) {
      const float* st = &sc.state[(t * group + g) * state_stride];
      const float inv = 1.0f / st[1];
      float* o = out + (it.token_begin + t) * out_stride + (it.kv_head * group + g) * hd;
      if (dims != nullptr) {
        for (int64_t pos = 0; pos < dim; ++pos) {
          if (dims[pos] >= 0) o[dims[pos]] = st[cpu::kStateHeader + pos] * inv;
        }
      } else {
        for (int64_t d = 0; d < hd; ++d) o[d] = st[cpu::kStateHeader + d] * inv;
      }
    }
  }
}

// Stores `n` floats as `t`, rounding to nearest even (FloatToBf16, F16C).
void StoreRow(DType t, const float* src, int64_t n, void* dst) {
  int64_t i = 0;
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      const __m256i magnitude = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
      for (; i + 8 <= n; i += 8) {
        const __m256i bits = _mm256_castps_si256(_mm256_loadu_ps(src + i));
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, magnitude), inf);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
        const __m256i rounded =
            _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
        const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
        const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), packed);
      }
      for (; i < n; ++i) d[i] = FloatToBf16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (; i + 8 <= n; i += 8) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
      }
      for (; i < n; ++i) d[i] = static_cast<uint16_t>(_cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT));
      return;
    }
    case DType::kF8E4M3:  // quantized by WriteKv itself (they need scales)
    case DType::kI8:
    case DType::kU8:  // no cache dtype
    case DType::kI32:
    case DType::kI64:
      return;
  }
}

}  // namespace

void WriteKv(const ForwardBatch& batch, KvCache& cache, int64_t layer, const float* k, const float* v,
             int64_t stride, KvHeadScales fp8_scales) {
  const KvCacheShape& s = cache.shape();
  ABSL_RAW_CHECK(s.dtype != DType::kF8E4M3 || (fp8_scales.k != nullptr && fp8_scales.v != nullptr),
                 "an fp8 KV cache needs its static scales");
  for (int32_t t = 0; t < batch.num_tokens(); ++t) {
    const int64_t slot = batch.slot_mapping[t];
    for (int64_t h = 0; h < s.num_kv_heads; ++h) {
      const float* k_row = k + t * stride + h * s.head_dim;
      const float* v_row = v + t * stride + h * s.head_dim;
      if (s.dtype == DType::kI8) {
        cpu::QuantizeKvRowInt8(k_row, s.head_dim, static_cast<int8_t*>(cache.Key(layer, slot, h)),
                               cache.KeyScale(layer, slot, h));
        cpu::QuantizeKvRowInt8(v_row, s.head_dim, static_cast<int8_t*>(cache.Value(layer, slot, h)),
                               cache.ValueScale(layer, slot, h));
        continue;
      }
      if (s.dtype == DType::kF8E4M3) {
        cpu::QuantizeKvRowFp8(k_row, s.head_dim, fp8_scales.k[h], static_cast<uint8_t*>(cache.Key(layer, slot, h)));
        cpu::QuantizeKvRowFp8(v_row, s.head_dim, fp8_scales.v[h], static_cast<uint8_t*>(cache.Value(layer, slot, h)));
        continue;
      }
      StoreRow(s.dtype, k + t * stride + h * s.head_dim, s.head_dim, cache.Key(layer, slot, h));
      StoreRow(s.dtype, v + t * stride + h * s.head_dim, s.head_dim, cache.Value(layer, slot, h));
    }
  }
}

void PagedAttention(const ForwardBatch& batch, const KvCache& cache, int64_t layer, const AttentionShape& shape,
                    const float* q, int64_t q_stride, float* out, KvHeadScales fp8_scales) {
  ABSL_RAW_CHECK(cache.shape().dtype != DType::kF8E4M3 || (fp8_scales.k != nullptr && fp8_scales.v != nullptr),
                 "an fp8 KV cache needs its static scales");
  const int64_t group = shape.num_heads / shape.num_kv_heads;
  const int64_t dim = (shape.head_dim + 15) / 16 * 16;
  const int64_t tile_tokens = std::max<int64_t>(1, kTileRows / group);

  std::vector<Item> items;
  int64_t total_cost = 0;
  int32_t token = 0;
  for (int32_t s = 0; s < static_cast<int32_t>(batch.seqs.size()); ++s) {
    const int32_t end = token + batch.seqs[s].num_query_tokens;
    for (int32_t t0 = token; t0 < end; t0 += static_cast<int32_t>(tile_tokens)) {
      const int32_t t1 = static_cast<int32_t>(std::min<int64_t>(end, t0 + tile_tokens));
      int64_t keys = 0;
      for (int32_t t = t0; t < t1; ++t) keys += batch.positions[t] + 1 - FirstKey(batch.positions[t], shape);
      const int64_t cost = keys * group * dim;
      total_cost += cost * shape.num_kv_heads;
      for (int32_t h = 0; h < shape.num_kv_heads; ++h) items.push_back({s, h, t0, t1, cost});
    }
    token = end;
  }
  // The ISA files see the KV dtype as DType's integer value (KvType there).
  static_assert(static_cast<int>(DType::kF32) == 0 && static_cast<int>(DType::kF16) == 1 &&
                static_cast<int>(DType::kBF16) == 2 && static_cast<int>(DType::kF8E4M3) == 3 &&
                static_cast<int>(DType::kI8) == 4);
  const ChunkKernel kernel = ActiveCpuIsa() >= CpuIsa::kAvx512 ? cpu::AttendChunkAvx512 : cpu::AttendChunkAvx2;
  std::vector<int32_t> dims;
  if (cache.shape().dtype == DType::kBF16) {
    for (int64_t pos = 0; pos < dim; ++pos) {
      const int64_t d = PositionDim(pos, dim);
      dims.push_back(d < shape.head_dim ? static_cast<int32_t>(d) : -1);
    }
  }
  const int32_t* dims_or_null = dims.empty() ? nullptr : dims.data();
  const int64_t row_bytes = shape.head_dim * static_cast<int64_t>(DTypeSize(cache.shape().dtype));
  // Heaviest first, so the long causal tiles do not finish last.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });

#pragma omp parallel if (total_cost >= kParallelWork)
  {
    // Reused across calls: the OpenMP threads persist, and decode steps are
    // too short to pay for fresh allocations.
    static thread_local Scratch sc;
    sc.widen.resize(cpu::kScratchFloats(dim));
    cpu::AttnChunkArgs args{};
    args.kv_dtype = static_cast<int>(cache.shape().dtype);
    args.head_dim = shape.head_dim;
    args.padded_dim = dim;
    args.scratch = sc.widen.data();
    args.group = group;
    args.scale = shape.scale;
#pragma omp for schedule(dynamic, 1)
    for (size_t i = 0; i < items.size(); ++i) {
      // The next item's first rows, so its start does not wait on memory.
      if (i + 1 < items.size()) {
        const Item& next = items[i + 1];
        const int64_t first = FirstKey(batch.positions[next.token_begin], shape);
        const int64_t last = batch.positions[next.token_end - 1];
        PrefetchChunk(cache, layer, batch.seqs[next.seq].block_table, next.kv_head, first / cpu::kAttnChunk, first,
                      last, row_bytes);
      }
      AttendItem(items[i], batch, cache, layer, shape, q, q_stride, out, kernel, dims_or_null, fp8_scales, args, sc);
    }
  }
}

}  // namespace tandem::kernels
