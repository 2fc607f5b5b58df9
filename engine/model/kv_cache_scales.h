// The static scales of an fp8 (E4M3) KV cache: one per layer and KV head,
// for K and for V (`--kv-cache-dtype fp8`; kernels::KvHeadScales).
//
// They come from the checkpoint when it has them, in the convention vLLM
// and compressed-tensors write: `model.layers.N.self_attn.k_scale` and
// `.v_scale`, each a scalar (or [1]) for every head or one value per KV
// head. A tensor-parallel rank takes its own heads' values. Without them
// every scale is 1.0, vLLM's default for an uncalibrated checkpoint: codes
// then hold K and V themselves, saturating at +-448 and with E4M3's
// relative step (2^-3) down to 2^-6, below which precision thins out.
// Thread-safety: plain data after loading.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/safetensors.h"
#include "engine/model/tp_shard.h"

namespace tandem {

struct KvCacheScales {
  std::vector<float> k;  // [num_hidden_layers][this rank's KV heads]
  std::vector<float> v;  // same
  int64_t num_kv_heads = 0;  // this rank's
  bool from_checkpoint = false;  // false: all 1.0

  const float* k_layer(int64_t layer) const { return k.data() + layer * num_kv_heads; }
  const float* v_layer(int64_t layer) const { return v.data() + layer * num_kv_heads; }
};

// Reads the scales of the KV heads `shard` holds. Either every layer has
// both tensors or none does. InvalidArgument naming the tensor for a
// partial set, a shape other than {}, {1} or {num_key_value_heads}, a
// non-float dtype, or a value that is not finite and > 0.
absl::StatusOr<KvCacheScales> LoadKvCacheScales(const WeightStore& store, const ModelConfig& config,
                                                const TpShard& shard);

// One line for start-up logs: where an fp8 cache's scales come from.
std::string KvCacheScalesNote(bool from_checkpoint);

}  // namespace tandem
