// Internal to engine/kernels/cpu: the per-ISA dot-product kernels behind
// kernels::MatMulFp8 (fp8_matmul.h), each in a translation unit compiled for
// its ISA. They return the unscaled sums S (the 16-lane order of
// matmul_kernels.h); the fp32 rescale and bias are done once, by the caller
// (matmul_fp8.cc, compiled without FMA contraction), for every path.
//
// Widening a code in registers (no x86 instruction converts E4M3 before
// AVX10.2): E4M3 is sign | 4 exponent bits (bias 7) | 3 mantissa bits, and
// F16 is sign | 5 exponent bits (bias 15) | 10 mantissa bits. Sign-extending
// the byte to 16 bits, shifting left by 7 and keeping bits 0xBF80 puts the
// sign at bit 15 and the 7 exponent+mantissa bits under F16's low exponent
// bits and top mantissa bits; read as an F16 that is the E4M3 value times
// 2^(7-15) = 2^-8 exactly, normal codes and subnormal ones alike (an E4M3
// subnormal m * 2^-9 lands on the F16 subnormal m * 2^-17), and vcvtph2ps
// (F16C, in the baseline) widens it to fp32 exactly. Every result is a
// normal fp32 (>= 2^-17) or zero, so products keep full precision for any
// activation above 2^-109. (Placing the bits under an fp32's exponent
// instead would give E4M3 * 2^-120: products of ordinary activations would
// fall into fp32 subnormals and lose bits.) Cost: sign-extend, shift, and,
// convert per vector. NaN codes (0x7F/0xFF) come out as +-1.875: Fp8Weight
// never holds one.
//
// Like matmul_kernels.h: plain data and C functions only, so no inline
// template from an AVX-512 file can be picked by the linker for an AVX2 CPU.
// Thread-safety: pure functions; single-threaded (the caller splits panels).
#pragma once

#include <cstdint>

namespace tandem::kernels::cpu {

// acc[i][j] = S for batch row i and weight row j (see above).
struct Fp8DotArgs {
  const float* x;        // [m][k]
  int64_t m;
  int64_t k;
  const uint8_t* codes;  // [nr][kp], code 0 past k
  int64_t nr;
  int64_t kp;            // a multiple of 64
  float* scratch;        // kFp8ScratchRows * kp floats: widened weight rows (prefill)
  float* acc;            // [m][nr]
};

// Rows of widened weights a kernel keeps in `scratch` at a time (>= each
// kernel's tile height).
inline constexpr int64_t kFp8ScratchRows = 6;

void Fp8DotsAvx2(const Fp8DotArgs& a);
// Needs AVX-512 F/BW/VL.
void Fp8DotsAvx512(const Fp8DotArgs& a);

// out[n] = each code widened as the kernels do (n a multiple of 16).
void WidenFp8Avx2(const uint8_t* codes, int64_t n, float* out);
void WidenFp8Avx512(const uint8_t* codes, int64_t n, float* out);

}  // namespace tandem::kernels::cpu
