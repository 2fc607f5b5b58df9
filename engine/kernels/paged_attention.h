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

// q: [num_tokens][q_stride] with head h at h*head_dim; out: [num_tokens][num_heads*head_dim].
void PagedAttention(const ForwardBatch& batch, const KvCache& cache, int64_t layer,
                    const AttentionShape& shape, const float* q, int64_t q_stride, float* out);

// Writes each token's K and V ([num_tokens][stride], heads at h*head_dim) to
// its slot in `layer`.
void WriteKv(const ForwardBatch& batch, KvCache& cache, int64_t layer, const float* k,
             const float* v, int64_t stride);

}  // namespace tandem::kernels
