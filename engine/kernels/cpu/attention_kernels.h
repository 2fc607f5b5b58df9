// Internal to engine/kernels/cpu: the per-ISA chunk kernels behind
// kernels::PagedAttention, one translation unit per ISA (AVX2 in
// paged_attention_cpu.cc, AVX-512 in paged_attention_avx512.cc).
//
// The numerics every ISA level and every code path share, per query row q
// (one token, one query head) at position p seeing keys [f, p] (f = 0, or
// p - window + 1 with a sliding window). Keys are cut into chunks of 16 at
// absolute positions (chunk c = [16c, 16c + 16)), so the cut never depends on
// the batch, the query tile, the block size or the thread. For each chunk c
// meeting [f, p], in increasing c, over its keys J = [16c, 16c+16) ∩ [f, p]:
//   1. s_j = Tree(fma chain of q[x] * k_j[x]) * scale for j in J: 16 fp32
//      lanes over the row's positions x (zero-padded to padded_dim), lane l
//      runs x = l, l+16, ... in increasing x from 0, and Tree adds lanes l + (l+8), + (l+4), + (l+2),
//      + (l+1), the same order as cpu/matmul_kernels.h. s_j = -inf off J.
//   2. m' = max(m, MaxTree(s)) (m starts at -inf); alpha = Exp(m - m').
//   3. e_j = Exp(s_j - m') (0 off J); l = fma(l, alpha, Tree(e)).
//   4. acc[d] = acc[d] * alpha, then acc[d] = fma(e_j, v_j[d], acc[d]) for
//      j in J increasing.
// Positions: for F32 and F16 rows position x is head dimension x. BF16 rows
// use pair-split order: in each whole group of 32 positions (32g + 32 <=
// padded_dim) positions 32g + i, i < 16, hold dimension 32g + 2i and 32g +
// 16 + i hold 32g + 2i + 1; a trailing group of 16 keeps element order. One
// 64-byte load of BF16 then yields both halves as fp32 with one shift and
// one and (no widening shuffles), in registers or into scratch alike; q is
// gathered and the output scattered in the same order. The order changes
// only which products a lane sums (step 1); steps 2-4 are elementwise.
// Quantized rows (int8, fp8 E4M3; kv_cache.h) are read as stored: position
// x is dimension x, and a row's codes are widened exactly, in registers or
// into scratch, to w_j: the integer itself for int8; for fp8 the code's
// bits placed into a binary16 (sign to bit 15, exponent and mantissa
// shifted up by 7) and widened by F16C, which is exactly E4M3 value / 256
// (E4M3's bias 7 is binary16's 15 minus 8; E4M3 subnormals land on binary16
// subnormals, which F16C widens exactly to normal floats). Step 1 then uses
// k_mul_j in place of scale: s_j = Tree(fma chain q[x] * w_j[x]) * k_mul_j,
// and step 4 uses e_j * v_mul_j in place of e_j (l still sums the unscaled
// e_j), where the driver computes k_mul_j = k_scale_j * scale and v_mul_j =
// v_scale_j in fp32, k/v_scale_j being the row's int8 scale or 256 times
// the head's fp8 scale. Float rows have k_mul_j = scale and v_mul_j = 1,
// which is the rule above unchanged. Why binary16 and not the shorter trick
// of putting E4M3's bits under a binary32's exponent (value * 2^-120, the
// 2^120 folded into the scale): E4M3 subnormals and small products would
// then be binary32 denormals, which cost a microcode assist per operation
// on x86 and read as zero wherever DAZ is set; binary16 never produces one.
// Output: out[d] = acc[d] * (1 / l). Exp is the polynomial below, evaluated
// with the same operations on every ISA. Every step is elementwise or a fixed
// tree, so a query row's bits depend only on q, p, f and its sequence's K/V:
// not on the other rows of the tile, the batch, the thread or the ISA.
// The files are compiled with -ffp-contract=off so that no a*b+c written as
// two operations is fused differently in one file than in the other.
//
// No standard-library templates in the ISA files (see cpu/matmul_kernels.h).
// Thread-safety: pure functions over caller-owned buffers; no threads inside.
#pragma once

#include <cstdint>

namespace tandem::kernels::cpu {

inline constexpr int kAttnChunk = 16;  // keys per chunk = fp32 lanes per accumulator

// Exp(x) for x <= 0 (Cephes expf): n = round(x * log2e); r = x - n*C1 - n*C2
// (two fmas); P = Horner over kExpPoly with fmas; y = fma(P, r*r, r) + 1;
// result = y * 2^n. Inputs below kExpMin (including -inf) give exactly 0.
inline constexpr float kExpMin = -87.0f;
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kExpC1 = 0.693359375f;
inline constexpr float kExpC2 = -2.12194440e-4f;
inline constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                      4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// Where the widened V rows start in AttnChunkArgs::scratch: after the 16 K
// rows plus one cache line, so that V row j is never 4 KiB from K row j (a
// load from one would wait on a store to the other: 4K aliasing).
constexpr int64_t kScratchVOffset(int64_t padded_dim) { return kAttnChunk * padded_dim + 16; }
constexpr int64_t kScratchFloats(int64_t padded_dim) { return kScratchVOffset(padded_dim) + kAttnChunk * padded_dim; }

// Floats before a row's accumulator in the state buffer: m, l, alpha, padding.
inline constexpr int64_t kStateHeader = 16;

// One chunk of keys against a tile of query rows of one sequence and one KV
// head. Plain data (no inline helpers, see above).
struct AttnChunkArgs {
  // Rows of head_dim elements (codes) of kv_dtype (static_cast<int>(DType)); lane i
  // is the key at position chunk_pos + i. Only lanes [lane_begin, lane_end)
  // are read; the other entries are ignored.
  const void* k_rows[kAttnChunk];
  const void* v_rows[kAttnChunk];
  int kv_dtype;
  int64_t head_dim;
  int64_t padded_dim;  // head_dim rounded up to a multiple of 16
  int64_t chunk_pos;   // multiple of 16
  int lane_begin;
  int lane_end;
  float* scratch;  // [kScratchFloats]: K and V rows widened to fp32, zero-padded
  float* scores;   // [num_tokens * group][16]: per-row scores, then weights
  // Query rows: num_tokens x group (the query heads sharing this KV head).
  int64_t num_tokens;
  int64_t group;
  const float* q;            // [num_tokens][group][padded_dim], zero-padded
  const int32_t* first_key;  // [num_tokens] f of each token
  const int32_t* last_key;   // [num_tokens] p of each token
  // [num_tokens][group][kStateHeader + padded_dim]: m, l, alpha, ..., acc.
  float* state;
  float scale;
  // Per lane: k_mul_j and v_mul_j above (scale and 1 for float rows). All
  // 16 lanes hold finite values.
  float k_mul[kAttnChunk];
  float v_mul[kAttnChunk];
};

void AttendChunkAvx2(const AttnChunkArgs& a);
void AttendChunkAvx512(const AttnChunkArgs& a);

}  // namespace tandem::kernels::cpu
