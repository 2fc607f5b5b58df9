// LoadKvCacheScales: find, shape-check, convert and shard the k/v scales.
#include "engine/model/kv_cache_scales.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/kernels/ops.h"

namespace tandem {
namespace {

std::string ScaleName(int64_t layer, const char* which) {
  return absl::StrCat("model.layers.", layer, ".self_attn.", which);
}

// The tensor's value for each of the model's KV heads.
absl::StatusOr<std::vector<float>> ReadPerHead(const WeightStore& store, const std::string& name,
                                               int64_t total_kv_heads) {
  absl::StatusOr<TensorView> t = store.Get(name, {});
  if (!t.ok()) t = store.Get(name, {1});
  if (!t.ok()) t = store.Get(name, {total_kv_heads});
  if (!t.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": a KV-cache scale must have shape [], [1] or [",
                                                   total_kv_heads, "] (one per KV head)"));
  }
  if (!IsFloatDType(t->dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": dtype ", std::string(DTypeName(t->dtype)), ", expected F32, F16 or BF16"));
  }
  const int64_t n = t->num_elements();
  std::vector<float> values(n);
  kernels::ConvertToFloat(t->dtype, t->data, n, values.data());
  for (float x : values) {
    if (!(std::isfinite(x) && x > 0.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": scale ", x, " is not finite and positive"));
    }
  }
  if (n == 1) values.assign(total_kv_heads, values[0]);
  return values;
}

}  // namespace

absl::StatusOr<KvCacheScales> LoadKvCacheScales(const WeightStore& store, const ModelConfig& config,
                                                const TpShard& shard) {
  const int64_t layers = config.num_hidden_layers, total = config.num_key_value_heads;
  const ShardRange heads = KvHeadShard(total, shard);
  KvCacheScales s;
  s.num_kv_heads = heads.length;
  int64_t found = 0;
  for (int64_t l = 0; l < layers; ++l) {
    found += store.Contains(ScaleName(l, "k_scale")) + store.Contains(ScaleName(l, "v_scale"));
  }
  if (found == 0) {
    s.k.assign(layers * heads.length, 1.0f);
    s.v.assign(layers * heads.length, 1.0f);
    return s;
  }
  for (int64_t l = 0; l < layers; ++l) {
    for (const char* which : {"k_scale", "v_scale"}) {
      const std::string name = ScaleName(l, which);
      if (!store.Contains(name)) {
        return absl::InvalidArgumentError(absl::StrCat(name, " is missing while other layers have KV-cache scales"));
      }
      ASSIGN_OR_RETURN(std::vector<float> per_head, ReadPerHead(store, name, total));
      std::vector<float>& out = which[0] == 'k' ? s.k : s.v;
      out.insert(out.end(), per_head.begin() + heads.begin, per_head.begin() + heads.begin + heads.length);
    }
  }
  s.from_checkpoint = true;
  return s;
}

std::string KvCacheScalesNote(bool from_checkpoint) {
  if (from_checkpoint) return "fp8 KV cache: static k/v scales from the checkpoint (k_scale, v_scale)";
  return "fp8 KV cache: the checkpoint has no k_scale/v_scale; every scale is 1.0 (vLLM's default without "
         "calibration)";
}

}  // namespace tandem
