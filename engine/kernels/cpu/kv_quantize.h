// Internal to engine/kernels/cpu: how WriteKv turns one (token, KV head)
// row of K or V into an int8 or fp8 cache row (the rules are stated on
// kernels::WriteKv). Scalar on purpose: a row is head_dim values written
// once per token and layer, next to matmuls that cost hidden_size times
// more, and scalar code is the same on every ISA.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

namespace tandem::kernels::cpu {

// codes[i] = rint(x[i] / *scale) clamped to [-127, 127], *scale = max|x| /
// 127 (fp32). All-zero rows: scale 0, codes 0. Non-finite inputs give
// defined but meaningless codes (NaN quotients become 0).
void QuantizeKvRowInt8(const float* x, int64_t n, int8_t* codes, float* scale);

// codes[i] = FloatToE4M3(x[i] / scale) (saturating at +-448). scale > 0.
void QuantizeKvRowFp8(const float* x, int64_t n, float scale, uint8_t* codes);

}  // namespace tandem::kernels::cpu
