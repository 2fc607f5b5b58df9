// W8A16 FP8 matmul (`--quantization fp8`): weights as FP8 E4M3 codes with
// one fp32 scale per output row, quantized once at load (or read from an FP8
// checkpoint); activations stay fp32.
//
// The rule (QuantizeRowFp8, QuantizeWeightFp8):
//   per output row, scale = max|w| / 448 (fp32 division);
//   code = FloatToE4M3(w / scale) (fp32 division; nearest even, saturating);
//   an all-zero row (or one whose max|w| / 448 underflows to 0): scale 0, codes 0.
// Dequantized: w = E4M3ToFloat(code) * scale. Weights must be finite.
//
// The arithmetic (MatMulFp8), for output y[i][r]:
//   S = sum over k of x[i][k] * e[r][k], e = E4M3ToFloat(code) * 2^-8 (exact),
//       summed exactly as fp32 MatMul sums (cpu/matmul_kernels.h): 16 lanes,
//       lane l a chain of fmas over k = l, l+16, ... in increasing k (the
//       last group zero-padded), then the lanes' pairwise tree;
//   y[i][r] = (scale[r] * 2^8) * S, then + bias[r]: one product, one add,
//       never fused (always two roundings).
// The 2^-8 comes from widening a code as an F16 (why: cpu/matmul_fp8_kernels.h);
// it is exact and undone by the (exact) 2^8 in the scale, so for activations
// with |x| >= 2^-109 (or 0) the result equals, bit for bit, fp32 MatMul over the
// matrix E4M3ToFloat(code) followed by scale * S (+ bias). Smaller nonzero
// activations (below 2^-109, near fp32's subnormals) may lose low bits of a
// product, as they partly would in fp32 anyway.
// The order depends on nothing but k, so a row's result is the same in any
// batch, tiling, thread count and on the AVX2 and AVX-512 paths: batch-
// invariant, bit for bit, on every ISA level.
//
// Thread-safety: pure functions over caller-owned buffers; MatMulFp8
// parallelises internally with OpenMP and keeps its scratch per thread.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kernels/ops.h"

namespace tandem::kernels {

// Columns of a code row are zero-padded (code 0 = +0.0) to a multiple of
// this, so kernels read whole vectors without a tail.
inline constexpr int64_t kFp8ColAlign = 64;

// An FP8 weight matrix owned in memory.
struct Fp8Weight {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t padded_cols = 0;     // cols rounded up to kFp8ColAlign
  std::vector<uint8_t> codes;  // [rows][padded_cols] E4M3 codes, 0 past cols; never a NaN code
  std::vector<float> scales;   // [rows]: W[r][c] ~= E4M3ToFloat(codes[r][c]) * scales[r]
};

// Quantizes `n` values of `v` by the rule above into `codes`; returns the scale.
float QuantizeRowFp8(const float* v, int64_t n, uint8_t* codes);

// Quantizes `w` (any file dtype, any row stride: a tensor-parallel shard
// quantizes just its own rows and columns). Parallel over rows.
Fp8Weight QuantizeWeightFp8(const WeightRef& w);

// An Fp8Weight from codes and scales already quantized (an FP8 checkpoint's
// `weight` [rows][cols] F8_E4M3 and its `weight_scale`; a per-tensor scale is
// passed repeated per row). `row_stride` (>= cols) is in codes. Copies both.
// InvalidArgument for a NaN code (0x7F / 0xFF: it would poison every dot
// product it enters), a scale that is not finite or exceeds 2^119 in
// magnitude (the kernels multiply it by 2^8), or inconsistent sizes.
absl::StatusOr<Fp8Weight> MakeFp8Weight(int64_t rows, int64_t cols, const uint8_t* codes, int64_t row_stride,
                                        const float* scales);

// out[cols] = the dequantized row `row`: E4M3ToFloat(code) * scale (fp32).
void DequantizeFp8Row(const Fp8Weight& w, int64_t row, float* out);

// y[m][w.rows] = x[m][w.cols] . dequantized(w)^T (+ bias[w.rows] when
// non-null), by the arithmetic above. y must not alias x.
void MatMulFp8(const float* x, int64_t m, const Fp8Weight& w, const float* bias, float* y);

// Which kernel MatMulFp8 runs (both give the same bits).
enum class Fp8Path : uint8_t {
  kAvx2,    // 8 lanes per ymm, two per 16-lane group
  kAvx512,  // one zmm per 16-lane group
};

// The path MatMulFp8 takes at the ActiveCpuIsa() level.
Fp8Path ActiveFp8Path();

// MatMulFp8 on a given path; for tests and benchmarks. kAvx512 on a CPU
// without AVX-512 runs kAvx2 (the same bits).
void MatMulFp8On(Fp8Path path, const float* x, int64_t m, const Fp8Weight& w, const float* bias, float* y);

// The value the kernels of `path` widen each code to, for `n` codes (any n):
// E4M3ToFloat(code) * 2^-8 for every non-NaN code. For tests.
void WidenFp8CodesOn(Fp8Path path, const uint8_t* codes, int64_t n, float* out);

}  // namespace tandem::kernels
