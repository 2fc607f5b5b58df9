// The kernel contract: every op the model needs, on fp32 activations and
// weights kept in their file dtype (F32 / F16 / BF16).
//
// Ops are batch-invariant by construction: the result for one token never
// depends on which other tokens share the batch (no batch-dependent blocking
// or reduction order), so a request gives the same tokens alone or batched.
// Ops parallelise internally over output features / heads with OpenMP.
// Thread-safety: pure functions over caller-owned buffers.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "engine/model/dtype.h"

namespace tandem::kernels {

struct Int8Weight;  // int8_matmul.h
struct Fp8Weight;   // fp8_matmul.h
struct Int4Weight;  // int4_matmul.h

// A 2-D weight matrix [rows][cols] in its file dtype. `row_stride` (elements)
// lets a tensor-parallel shard address a column range of a larger matrix.
struct WeightRef {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // elements between consecutive rows (>= cols)
  // The same BF16 matrix packed for the AMX kernel by PackBf16ForAmx, or
  // null (the kernel then reads `data` in place). Owned by whoever packed it.
  const uint16_t* amx_tiles = nullptr;
  // The same matrix quantized by QuantizeWeightInt8 (`--quantization int8`),
  // or null. When set, the model runs this matrix through MatMulInt8. Owned
  // by whoever quantized it.
  const Int8Weight* int8 = nullptr;
  // The same matrix quantized by QuantizeWeightFp8 (`--quantization fp8`),
  // or null. When set, the model runs it through MatMulFp8. Owned likewise.
  const Fp8Weight* fp8 = nullptr;
  // The same matrix quantized by QuantizeWeightInt4 (`--quantization int4`),
  // or null. When set, the model runs this matrix through MatMulInt4. Owned
  // by whoever quantized it.
  const Int4Weight* int4 = nullptr;
  // When non-null, the quantized matrix's column j multiplies input column
  // input_perm[j] (a GPTQ act-order checkpoint, its columns sorted by group
  // so groups are contiguous); the caller gathers x accordingly. [cols].
  const int32_t* input_perm = nullptr;

  // Row `r` offset by `c` columns, as a typed pointer.
  const uint8_t* RowBytes(int64_t r) const {
    return static_cast<const uint8_t*>(data) + r * row_stride * static_cast<int64_t>(DTypeSize(dtype));
  }
};

// The x86 instruction-set level the CPU kernels run at. Each level's kernels
// give the same bits as the levels below it for the same op (they share one
// per-element reduction order; see cpu/matmul_kernels.h), so the level is a
// speed choice only. Ordered: a level implies every level before it.
enum class CpuIsa : uint8_t {
  kAvx2,        // x86-64-v3: AVX2 + FMA + F16C (the build's baseline)
  kAvx512,      // + AVX-512 F/BW/VL/DQ
  kAvx512Bf16,  // + AVX512_BF16 (vdpbf16ps)
  kAmx,         // + AMX-TILE / AMX-BF16, with the OS's permission to use tiles
};

// The level in effect: the best this CPU (and OS) supports, capped by the
// environment variable TANDEM_CPU_ISA (avx2 | avx512 | avx512_bf16 | amx) when
// set. Detected once; thread-safe.
CpuIsa ActiveCpuIsa();

// The best level this CPU supports, ignoring any cap.
CpuIsa DetectedCpuIsa();

// Caps the level at `isa` (clamped to what the CPU supports) and returns the
// level now in effect; for tests and benchmarks that compare levels. Must
// not race with running kernels.
CpuIsa SetCpuIsa(CpuIsa isa);

// "avx2", "avx512", "avx512_bf16", "amx".
std::string_view CpuIsaName(CpuIsa isa);

// Converts `n` elements of `src` (dtype `t`) to fp32.
void ConvertToFloat(DType t, const void* src, int64_t n, float* dst);

// y[m][rows] = x[m][cols] . W^T  (+ bias[rows] when bias is non-null).
// y must not alias x.
void MatMul(const float* x, int64_t m, const WeightRef& w, const float* bias, float* y);

// The arithmetic a model's matmuls run in (`--dtype`).
enum class MatMulPrecision : uint8_t {
  kF32,   // fp32 activations, weights widened exactly: MatMul (the reference)
  kBf16,  // BF16 activations x BF16 weights, fp32 sums: MatMulBf16
};

// MatMul in BF16 precision, what --dtype bfloat16 computes: x rounded to BF16
// (nearest even), BF16 x BF16 products, fp32 sums; y and bias stay fp32. On
// AMX it runs on tiles (BF16 weights only). At kAvx512Bf16, BF16 weights run
// the vdpbf16ps kernel where this core's vdpbf16ps outruns its fp32 fma
// (measured once; TANDEM_BF16_DOT=1/0 forces it on/off): the same bits as the
// fallback, subnormals aside. Otherwise, and for F32/F16 weights, the rounded x
// goes through MatMul with the weights as stored.
// Batch-invariant like MatMul; see cpu/matmul_kernels.h for the order.
void MatMulBf16(const float* x, int64_t m, const WeightRef& w, const float* bias, float* y);

// Whether MatMulBf16 over BF16 weights runs on BF16 dot-product hardware at
// the active level, i.e. faster than MatMul: AMX, or kAvx512Bf16 where the
// vdpbf16ps kernel is taken (above). `--dtype auto` asks this.
bool Bf16MatMulIsFast();

// The AMX kernel's weight layout, for MatMulBf16 to stream contiguously
// instead of reading the file's rows in place: blocks of 32 rows, each as
// ceil(cols / 32) steps of 32 x 32 BF16 values (rows 32b..32b+31, columns
// 32s..32s+31; two 1 KiB tiles), zero past the matrix. The products and
// their order are unchanged, so results are bit-identical either way.
// AmxPackedElems: the packed size in BF16 elements.
int64_t AmxPackedElems(int64_t rows, int64_t cols);
// Packs BF16 weight `w` into `dst` (AmxPackedElems(w.rows, w.cols) elements).
void PackBf16ForAmx(const WeightRef& w, uint16_t* dst);

// out[m][d] = x * rsqrt(mean(x^2) + eps) * weight. out may alias x.
void RmsNorm(const float* x, int64_t m, int64_t d, const WeightRef& weight, double eps, float* out);

// Rotates `num_heads` heads of `head_dim` in place for each of `m` tokens,
// HF "rotate_half" layout: element i pairs with i + head_dim/2.
// cos/sin: [m][head_dim/2]. x: [m][row_stride] with heads at h*head_dim.
void ApplyRope(float* x, int64_t m, int64_t row_stride, int64_t num_heads, int64_t head_dim,
               const float* cos, const float* sin);

// out[m][d] = silu(gate[m][d]) * up[m][d]. out may alias gate.
void SiluMul(const float* gate, const float* up, int64_t m, int64_t d, float* out);

// out[i][:] = row ids[i] of table [rows][cols].
void EmbeddingLookup(const WeightRef& table, std::span<const int32_t> ids, float* out);

}  // namespace tandem::kernels
