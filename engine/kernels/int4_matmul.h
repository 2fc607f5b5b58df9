// W4A16 int4 matmul (`--quantization int4`): 4-bit weights, group-wise
// asymmetric (a scale and a zero point per group of columns of a row),
// quantized once at load by round-to-nearest (RTN); the activations stay in
// the engine's precision, fp32 ("A16" in the usual name means "not
// quantized"; here that is fp32).
//
// The rule (QuantizeWeightInt4), per weight row:
//   group size G = 128 if cols % 128 == 0, else 64 if cols % 64 == 0, else
//   32. When cols is not a multiple of 32 the last group is zero-padded:
//   it is quantized as if the row went on with w = 0 up to the next multiple
//   of 32, so the padded columns get q = zero and dequantize to exactly 0.
//   Per group:
//     lo = min(0, min w), hi = max(0, max w)   (0 is always in range, so it
//                                                is exactly representable, as
//                                                GPTQ/AWQ do)
//     scale = (hi - lo) / 15                    (fp32 subtraction, division)
//     zero  = clamp(rint(-lo / scale), 0, 15)   (fp32 division; rint rounds
//                                                halves to even)
//     q     = clamp(rint(w / scale) + zero, 0, 15)
//   A group whose scale is not > 0 (all zero, or a range below 15 times the
//   smallest subnormal) gets scale 0, zero 0 and q 0. Weights must be
//   finite.
// The dequantized weight is the fp32 product, rounded once:
//   deq(r, c) = float(q[r][c] - zero[r][g]) * scale[r][g],  g = c / G.
// The output (MatMulInt4) is exactly the fp32 MatMul of x with the
// dequantized matrix, in MatMul's summation order (cpu/matmul_kernels.h):
//   16 fp32 lanes per output; lane l runs acc[l] = fma(x[k], deq(r, k),
//   acc[l]) for k = l, l+16, l+32, ... in increasing k (x read as 0 past
//   cols); then lanes are added pairwise l + (l+8), + (l+4), + (l+2),
//   + (l+1); then + bias[r] (+ 0 when there is no bias).
// Why this order and not "sum x * (q - zero) per group, then scale once":
// it is the order every other matmul of the engine uses, so the prefill
// path can dequantize a panel into fp32 and reuse one fp32 tile, the decode
// path can dequantize in registers, and both give the same bits; the scale
// costs one multiply per 16-entry lookup table per group, not per weight.
//
// Every path (AVX-512, AVX2, scalar) follows that order with the same
// dequantized values, so they give the same bits, and a row's result never
// depends on m, the batch, the tiling or the thread count (batch-invariant).
// Thread-safety: pure functions over caller-owned buffers; MatMulInt4
// parallelises internally with OpenMP and keeps its scratch per thread.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kernels/ops.h"

namespace tandem::kernels {

// Quantized columns come in blocks of this many (16 bytes of nibbles).
inline constexpr int64_t kInt4Block = 32;

// An int4 weight matrix owned in memory.
//
// Packed layout, row-major: row r is padded_cols / 2 bytes; each block of 32
// columns [32b, 32b + 32) is 16 bytes, byte i holding column 32b + i in its
// low nibble and column 32b + 16 + i in its high nibble. Why: one 16-byte
// load widened to 16 int32 lanes gives the low nibbles (one 16-lane step of
// the summation order) and, shifted by 4, the high ones (the next step).
struct Int4Weight {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t group_size = 0;        // a multiple of kInt4Block
  int64_t num_groups = 0;        // ceil(cols / group_size)
  int64_t padded_cols = 0;       // num_groups * group_size
  std::vector<uint8_t> packed;   // [rows][padded_cols / 2], layout above
  std::vector<float> scales;     // [rows][num_groups]
  std::vector<uint8_t> zeros;    // [rows][num_groups], each 0..15

  int64_t RowBytes() const { return padded_cols / 2; }
  // The code q (0..15) of W[r][c], c < padded_cols.
  uint8_t Code(int64_t r, int64_t c) const {
    const uint8_t byte = packed[static_cast<size_t>(r * RowBytes() + c / kInt4Block * 16 + c % 16)];
    return (c % kInt4Block) < 16 ? (byte & 0x0f) : (byte >> 4);
  }
};

// The group size the rule picks for `cols` columns (128, 64 or 32).
int64_t Int4GroupSize(int64_t cols);

// Quantizes `w` by the rule above (any file dtype, any row stride: a
// tensor-parallel shard quantizes just its own rows and columns; the group
// size follows the shard's column count). Parallel over rows.
Int4Weight QuantizeWeightInt4(const WeightRef& w);

// Builds an Int4Weight from codes and group parameters already decided (the
// AWQ / GPTQ / compressed-tensors loaders, once unpacked to one code per
// byte): q [rows][cols] in 0..15, scales and zeros [rows][ceil(cols /
// group_size)]. group_size must be a positive multiple of 32 (all three
// formats use 32, 64 or 128); when it does not divide cols the last group's
// missing columns are padded with q = zero (dequantizing to 0). Scales must
// be finite. InvalidArgument, naming the first offending value, otherwise.
absl::StatusOr<Int4Weight> PackInt4Weight(int64_t rows, int64_t cols, int64_t group_size, const uint8_t* q,
                                          const float* scales, const uint8_t* zeros);

// out[0..cols) = the dequantized row `row` (deq above).
void DequantizeInt4Row(const Int4Weight& w, int64_t row, float* out);

// y[m][w.rows] = x[m][w.cols] . deq(W)^T (+ bias[w.rows] when non-null), in
// the order documented above. y must not alias x.
void MatMulInt4(const float* x, int64_t m, const Int4Weight& w, const float* bias, float* y);

// Which kernel MatMulInt4 runs (all give the same bits).
enum class Int4Path : uint8_t {
  kScalar,  // portable C++: the order spelled out with scalar fma
  kAvx2,    // the 16 lanes as two ymm; nibbles widened, (q - zero) * scale
  kAvx512,  // one zmm; a 16-entry vpermps table per group maps a nibble to its weight
};

// The path MatMulInt4 takes at the ActiveCpuIsa() level: kAvx512 when the
// level is >= kAvx512, else kAvx2.
Int4Path ActiveInt4Path();

// MatMulInt4 on a given path; for tests and benchmarks. kAvx512 on a CPU
// without AVX-512 runs kAvx2 (the same bits).
void MatMulInt4On(Int4Path path, const float* x, int64_t m, const Int4Weight& w, const float* bias, float* y);

}  // namespace tandem::kernels
