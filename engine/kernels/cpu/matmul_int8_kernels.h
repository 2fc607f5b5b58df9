// Internal to engine/kernels/cpu: the per-ISA int32 dot-product kernels
// behind kernels::MatMulInt8 (int8_matmul.h), each in a translation unit
// compiled for its ISA. They compute exact integer sums, so any order of
// products and lanes gives the same result; the fp32 rescale is done once,
// by the caller (matmul_int8.cc), for every path.
//
// Like matmul_kernels.h: plain data and C functions only, so no inline
// template from a VNNI file can be picked by the linker for an AVX2 CPU.
// Thread-safety: pure functions; single-threaded (the caller splits panels).
#pragma once

#include <cstdint>

namespace tandem::kernels::cpu {

// acc[i][j] = sum_k xq[i][k] * w[j][k] over k < kp, exact in int32 (wrapping
// only where the true sum itself would not fit).
struct Int8DotArgs {
  const int8_t* xq;        // [m][kp] quantized activations, zero past cols
  int64_t m;
  const int8_t* w;         // [nr][kp] quantized weight rows, zero past cols
  const int32_t* w_sums;   // [nr] sum of each weight row (VNNI's offset correction)
  int64_t nr;
  int64_t kp;              // a multiple of 64
  int32_t* acc;            // [m][nr]
};

void Int8DotsScalar(const Int8DotArgs& a);
void Int8DotsAvx2(const Int8DotArgs& a);
// Needs AVX-512 F/BW and AVX512-VNNI.
void Int8DotsAvx512Vnni(const Int8DotArgs& a);

}  // namespace tandem::kernels::cpu
