// Causal grouped-query attention reading K/V through block tables.
//
// Each query token at absolute position p attends to positions [0, p] (or,
// with a sliding window W, (p - W, p]) of its own sequence, whose K/V live in the paged cache (including the tokens of
// this step, which the caller has already written). This covers decode tokens,
// whole prompts and prompt chunks after a cached prefix alike.
// Thread-safety: pure function over caller-owned buffers; parallel inside.
#pragma once

#include <cstdint>
#include <span>

#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"

namespace tandem::kernels {

struct AttentionShape {
  int64_t num_heads = 0;     // query heads on this rank
  int64_t num_kv_heads = 0;  // KV heads on this rank (num_heads % num_kv_heads == 0)
  int64_t head_dim = 0;
  float scale = 1.0f;        // usually 1/sqrt(head_dim)
  int64_t sliding_window = 0;  // > 0: a query at p sees keys (p - window, p] only
};

// The static scales of one layer of an fp8 (E4M3) cache: a K code c of KV
// head h stands for E4M3ToFloat(c) * k[h], a V code for E4M3ToFloat(c) * v[h].
// Borrowed, [num_kv_heads] each (this rank's heads). Required (non-null) for
// fp8 caches, ignored for every other dtype (int8 caches carry per-token
// scales inside their blocks, kv_cache.h).
struct KvHeadScales {
  const float* k = nullptr;
  const float* v = nullptr;
};

// q: [num_tokens][q_stride] with head h at h*head_dim; out: [num_tokens][num_heads*head_dim].
// int8 and fp8 caches are read as they are stored (codes widened in
// registers, scales applied per key to the score and per key to the softmax
// weight of its V row; see cpu/attention_kernels.h), never dequantized into
// a copy.
void PagedAttention(const ForwardBatch& batch, const KvCache& cache, int64_t layer,
                    const AttentionShape& shape, const float* q, int64_t q_stride, float* out,
                    KvHeadScales fp8_scales = {});

// Writes each token's K and V ([num_tokens][stride], heads at h*head_dim) to
// its slot in `layer`, converting to the cache's dtype: float dtypes round to
// nearest even; int8 quantizes each (token, head) row symmetrically (scale =
// max|x| / 127 in fp32, code = rint(x / scale) clamped to [-127, 127]; an
// all-zero row gets scale 0 and codes 0); fp8 stores FloatToE4M3(x / scale)
// with the head's static scale (saturating at +-448).
void WriteKv(const ForwardBatch& batch, KvCache& cache, int64_t layer, const float* k,
             const float* v, int64_t stride, KvHeadScales fp8_scales = {});

}  // namespace tandem::kernels
