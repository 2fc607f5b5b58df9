// Paged causal attention on the CPU: one task per (query token, query head).
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/kernels/ops.h"
#include "engine/kernels/paged_attention.h"

namespace tandem::kernels {
namespace {

// One (token, head) work item with everything needed to find its K/V.
struct QueryRef {
  int32_t token;  // index into the flat batch
  int32_t seq;    // index into batch.seqs
};

// Stores `n` floats as `t` (round to nearest even for the 16-bit types).
void StoreAs(DType t, const float* src, int64_t n, void* dst) {
  switch (t) {
    case DType::kF32:
      std::copy_n(src, n, static_cast<float*>(dst));
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = FloatToBf16(src[i]);
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) static_cast<_Float16*>(dst)[i] = static_cast<_Float16>(src[i]);
      return;
  }
}

// A K or V row as fp32: in place when the cache is fp32, else converted into `buf`.
const float* LoadRow(DType t, const void* src, int64_t n, float* buf) {
  if (t == DType::kF32) return static_cast<const float*>(src);
  ConvertToFloat(t, src, n, buf);
  return buf;
}

}  // namespace

void WriteKv(const ForwardBatch& batch, KvCache& cache, int64_t layer, const float* k,
             const float* v, int64_t stride) {
  const KvCacheShape& s = cache.shape();
  for (int32_t t = 0; t < batch.num_tokens(); ++t) {
    const int64_t slot = batch.slot_mapping[t];
    for (int64_t h = 0; h < s.num_kv_heads; ++h) {
      StoreAs(s.dtype, k + t * stride + h * s.head_dim, s.head_dim, cache.Key(layer, slot, h));
      StoreAs(s.dtype, v + t * stride + h * s.head_dim, s.head_dim, cache.Value(layer, slot, h));
    }
  }
}

void PagedAttention(const ForwardBatch& batch, const KvCache& cache, int64_t layer,
                    const AttentionShape& shape, const float* q, int64_t q_stride, float* out) {
  const int64_t block_size = cache.shape().block_size;
  const DType kv_dtype = cache.shape().dtype;
  const int64_t hd = shape.head_dim;
  const int64_t group = shape.num_heads / shape.num_kv_heads;

  std::vector<QueryRef> queries;
  queries.reserve(batch.num_tokens());
  int32_t token = 0;
  for (int32_t s = 0; s < static_cast<int32_t>(batch.seqs.size()); ++s) {
    for (int32_t i = 0; i < batch.seqs[s].num_query_tokens; ++i) queries.push_back({token++, s});
  }
  const int64_t num_items = static_cast<int64_t>(queries.size()) * shape.num_heads;

  // Small batches (short contexts, few heads) run on the calling thread.
  const int64_t work = num_items * hd * (batch.num_tokens() > 0 ? batch.positions.back() + 1 : 0);
#pragma omp parallel if (work >= (1 << 16))
  {
    std::vector<float> scores;
    std::vector<float> acc(hd);
    std::vector<float> row(hd);
#pragma omp for schedule(dynamic, 4)
    for (int64_t item = 0; item < num_items; ++item) {
      const QueryRef& qr = queries[item / shape.num_heads];
      const int64_t h = item % shape.num_heads;
      const int64_t kv_h = h / group;
      const std::vector<int32_t>& table = batch.seqs[qr.seq].block_table;
      const int64_t num_keys = static_cast<int64_t>(batch.positions[qr.token]) + 1;
      const int64_t first_key =
          shape.sliding_window > 0 ? std::max<int64_t>(0, num_keys - shape.sliding_window) : 0;
      const float* qv = q + qr.token * q_stride + h * hd;

      scores.resize(num_keys);
      float max_score = -INFINITY;
      for (int64_t p = first_key; p < num_keys; ++p) {
        const int64_t slot = table[p / block_size] * block_size + p % block_size;
        const float* kv = LoadRow(kv_dtype, cache.Key(layer, slot, kv_h), hd, row.data());
        float dot = 0.0f;
        for (int64_t j = 0; j < hd; ++j) dot += qv[j] * kv[j];
        scores[p] = dot * shape.scale;
        max_score = std::max(max_score, scores[p]);
      }
      float denom = 0.0f;
      for (int64_t p = first_key; p < num_keys; ++p) {
        scores[p] = std::exp(scores[p] - max_score);
        denom += scores[p];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t p = first_key; p < num_keys; ++p) {
        const int64_t slot = table[p / block_size] * block_size + p % block_size;
        const float* vv = LoadRow(kv_dtype, cache.Value(layer, slot, kv_h), hd, row.data());
        const float w = scores[p];
        for (int64_t j = 0; j < hd; ++j) acc[j] += w * vv[j];
      }
      float* o = out + qr.token * (shape.num_heads * hd) + h * hd;
      const float inv = 1.0f / denom;
      for (int64_t j = 0; j < hd; ++j) o[j] = acc[j] * inv;
    }
  }
}

}  // namespace tandem::kernels
