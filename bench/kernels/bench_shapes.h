// The matrix shapes the kernel benchmarks run at: SmolLM2-135M's projections
// (hidden 576, 9 query heads and 3 KV heads of 64, FFN 1536, vocab 49152),
// and TinyLlama-1.1B's MLP projections.
// Thread-safety: constants only.
#pragma once

#include <cstdint>

namespace tandem::bench {

// y[M][n] = x[M][k] . W[n][k]^T
struct MatShape {
  const char* name;
  int64_t n;  // output features (weight rows)
  int64_t k;  // input features
};

inline constexpr MatShape kSmolLm2MatShapes[] = {
    {"q_576x576", 576, 576},          {"kv_576x192", 192, 576},     {"gate_up_576x1536", 1536, 576},
    {"down_1536x576", 576, 1536},     {"lm_head_576x49152", 49152, 576},
};

// TinyLlama-1.1B's MLP projections (hidden 2048, FFN 5632): large enough that
// decode is bound by memory bandwidth, as in the targets.
inline constexpr MatShape kTinyLlamaMatShapes[] = {
    {"gate_up_2048x5632", 5632, 2048}, {"down_5632x2048", 2048, 5632},
};

// Attention / elementwise dimensions.
inline constexpr int64_t kSmolHidden = 576;
inline constexpr int64_t kSmolHeads = 9;
inline constexpr int64_t kSmolKvHeads = 3;
inline constexpr int64_t kSmolHeadDim = 64;
inline constexpr int64_t kSmolFfn = 1536;

}  // namespace tandem::bench
