// The weights of one tensor-parallel rank of a Llama-family model, as views
// into the memory-mapped safetensors files (no copies, file dtype kept).
//
// Column-parallel projections (q, k, v, gate, up) hold a row range of their
// [out, in] matrix; row-parallel ones (o, down) hold a column range, addressed
// through WeightRef::row_stride. Biases are small and converted to fp32.
// Thread-safety: immutable after LoadLlamaWeights().
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kernels/ops.h"
#include "engine/model/checkpoint_quantization.h"
#include "engine/model/model_config.h"
#include "engine/model/quantized_linear.h"
#include "engine/model/safetensors.h"
#include "engine/model/tp_shard.h"

namespace tandem {

struct LlamaLayerWeights {
  kernels::WeightRef input_norm;  // [hidden]
  kernels::WeightRef q_proj;      // [local_heads * head_dim, hidden]
  kernels::WeightRef k_proj;      // [local_kv_heads * head_dim, hidden]
  kernels::WeightRef v_proj;      // [local_kv_heads * head_dim, hidden]
  std::vector<float> q_bias, k_bias, v_bias;  // empty when the model has none
  kernels::WeightRef o_proj;      // [hidden, local_heads * head_dim] (column slice)
  std::vector<float> o_bias;      // [hidden] or empty; added once, after the reduction
  kernels::WeightRef post_norm;   // [hidden]
  kernels::WeightRef gate_proj;   // [local_ffn, hidden]
  kernels::WeightRef up_proj;     // [local_ffn, hidden]
  kernels::WeightRef down_proj;   // [hidden, local_ffn] (column slice)
  std::vector<float> gate_bias, up_bias;  // [local_ffn] or empty (mlp_bias)
  std::vector<float> down_bias;           // [hidden] or empty; added after the reduction
};

// Per-rank sizes derived from the config and the shard.
struct LlamaShardDims {
  int64_t num_heads = 0;     // query heads on this rank
  int64_t num_kv_heads = 0;  // KV heads on this rank (replicas included)
  int64_t ffn = 0;           // intermediate size on this rank
  VocabShard vocab;          // embedding / LM-head rows on this rank
};

struct LlamaWeights {
  std::unique_ptr<WeightStore> store;  // owns the mappings the refs point into
  LlamaShardDims dims;
  kernels::WeightRef embed;            // [vocab rows of this rank, hidden]
  std::vector<LlamaLayerWeights> layers;
  kernels::WeightRef final_norm;       // [hidden]
  kernels::WeightRef lm_head;          // [vocab rows of this rank, hidden] (the embedding when tied)
  QuantizedStorage quantized;          // a pre-quantized checkpoint's layers, decoded (refs point here)
};

// Loads and shape-checks every tensor of `config` from `store`. Errors:
// NotFound / InvalidArgument naming the tensor and file; InvalidArgument for a
// split the shard cannot make (heads or FFN not divisible by the TP size).
// `quant`: how the checkpoint stores its linear layers (config.json's
// quantization_config); quantized ones load through LoadQuantizedLinear.
absl::StatusOr<LlamaWeights> LoadLlamaWeights(const ModelConfig& config,
                                              std::unique_ptr<WeightStore> store,
                                              const TpShard& shard,
                                              const CheckpointQuantization& quant = {});

}  // namespace tandem
