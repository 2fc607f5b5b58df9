// Internal to engine/kernels/cpu: the per-ISA MatMul kernels behind
// kernels::MatMul, each in its own translation unit compiled for its ISA.
//
// The numerics every ISA level shares (so results are bit-identical across
// levels, batch sizes, tilings and thread counts):
//   y[i][r] = Tree(acc) + bias[r], where acc is 16 fp32 lanes; lane l runs
//   acc[l] = fma(x[i][k], w[r][k], acc[l]) for k = l, l+16, l+32, ... in
//   increasing k, with the last partial group of 16 zero-padded (fma with
//   0 * 0), and Tree adds lanes pairwise: l + (l+8), then + (l+4), + (l+2),
//   + (l+1). Weights are widened to fp32 exactly (BF16, F16) before the fma.
// Nothing in the order depends on m, on the row's place in the batch, or on
// which thread computes it: that is what makes MatMul batch-invariant.
//
// Why the ISA files use no standard-library templates: an inline template
// instantiated in an AVX-512 translation unit is a weak symbol the linker
// may pick for the whole program, which would then fault on an AVX2-only
// CPU. So these files stick to intrinsics, plain loops and C functions.
//
// BF16 precision (MatMulBf16): x is rounded to BF16 (nearest even) and the
// weights are BF16, so every product is exact in fp32; products are summed in
// fp32. The fallback runs the rounded x through the kernels above, so it has
// their order. MatMulAvx512Bf16 (AVX512_BF16, vdpbf16ps) has it too: per fp32
// lane, vdpbf16ps does two sequential fmas, the pair's odd BF16 element
// first, so with both operands laid out as position 2l+1 = k 32s+l and
// position 2l = k 32s+16+l, lane l runs k = l, l+16, l+32, ... as above
// (the zero padding of a k tail only adds fma(0 * 0), which changes no lane:
// a lane that starts at +0 never holds -0 without underflow). It is
// bit-identical to the fallback with one exception: vdpbf16ps treats
// subnormal inputs as zero and flushes subnormal results (DAZ/FTZ), so the BF16
// levels agree bit for bit except where a rounded input, a product or a
// partial sum is subnormal (|v| < 2^-126), which activations and weights of
// real models do not reach in practice. On AMX (MatMulAmxBf16) an output is one tile element accumulated by
// tdpbf16ps over k in steps of 32 from 0 up, the same for every batch size:
// batch-invariant and deterministic on one machine, but a different summation
// order from the fp32 kernels' lanes, so AMX and the fallback (rounded x through
// the fp32 kernels) agree to fp32 rounding, not bit for bit.
// Thread-safety: pure functions; they parallelise internally with OpenMP.
#pragma once

#include <cstdint>

namespace tandem::kernels::cpu {

// Plain data (no inline helpers, see above).
struct MatMulArgs {
  const float* x;      // [m][k]
  int64_t m;
  int weight_dtype;    // static_cast<int>(DType)
  const void* w;       // [n][row_stride] elements of weight_dtype
  int64_t n;
  int64_t k;
  int64_t row_stride;  // elements
  const float* bias;   // [n] or null
  float* y;            // [m][n]
  const uint16_t* amx_tiles = nullptr;  // MatMulAmxBf16: w packed by PackBf16ForAmx, or null
};

void MatMulAvx2(const MatMulArgs& a);
void MatMulAvx512(const MatMulArgs& a);
// MatMulBf16's AVX512_BF16 kernel: weight_dtype must be BF16; x is rounded to
// BF16 inside. Same bits as rounded x through MatMulAvx512 (see above).
void MatMulAvx512Bf16(const MatMulArgs& a);
// Measured once by MatMulBf16 (about 0.1 ms): multiply-adds per second of
// vdpbf16ps over those of fp32 vfmadd231ps on this core. Needs AVX512_BF16.
double Bf16DotMacRateOverFma();
// weight_dtype must be BF16. Needs AMX-TILE/AMX-BF16 and the OS permission.
void MatMulAmxBf16(const MatMulArgs& a);

}  // namespace tandem::kernels::cpu
