#include "engine/model/llama_weights.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace tandem {
namespace {

kernels::WeightRef WholeMatrix(const TensorView& t) {
  const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
  const int64_t cols = t.shape.back();
  return {t.dtype, t.data, rows, cols, cols};
}

// Rows [range.begin, range.begin + range.length) of a [rows, cols] matrix.
kernels::WeightRef RowSlice(const TensorView& t, ShardRange range) {
  kernels::WeightRef w = WholeMatrix(t);
  w.data = static_cast<const uint8_t*>(t.data) + range.begin * w.cols * DTypeSize(t.dtype);
  w.rows = range.length;
  return w;
}

// Columns [range.begin, range.begin + range.length) of a [rows, cols] matrix.
kernels::WeightRef ColumnSlice(const TensorView& t, ShardRange range) {
  kernels::WeightRef w = WholeMatrix(t);
  w.data = static_cast<const uint8_t*>(t.data) + range.begin * DTypeSize(t.dtype);
  w.cols = range.length;
  return w;
}

std::vector<float> SliceToFloat(const TensorView& t, ShardRange range) {
  std::vector<float> out(range.length);
  kernels::ConvertToFloat(t.dtype,
                          static_cast<const uint8_t*>(t.data) + range.begin * DTypeSize(t.dtype),
                          range.length, out.data());
  return out;
}

absl::Status CheckDivisible(int64_t total, const char* what, const TpShard& shard) {
  if (shard.size < 1 || shard.rank < 0 || shard.rank >= shard.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid tensor-parallel shard: rank ", shard.rank, " of ", shard.size));
  }
  if (total % shard.size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot split ", what, " = ", total, " over ",
                                                   shard.size, " tensor-parallel ranks"));
  }
  return absl::OkStatus();
}

// The float tensor `name`: Get() plus a dtype check, so that a quantized
// checkpoint's storage tensor (I8, F8_E4M3, ...) read where a float matrix is
// expected fails with its name instead of being read as floats.
absl::StatusOr<TensorView> GetFloat(const WeightStore& s, const std::string& name,
                                    const std::vector<int64_t>& shape) {
  ASSIGN_OR_RETURN(TensorView t, s.Get(name, shape));
  if (!IsFloatDType(t.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is ", std::string(DTypeName(t.dtype)),
                                                   ": expected F32, F16 or BF16"));
  }
  return t;
}

}  // namespace

absl::StatusOr<LlamaWeights> LoadLlamaWeights(const ModelConfig& c,
                                              std::unique_ptr<WeightStore> store,
                                              const TpShard& shard, const CheckpointQuantization& quant) {
  RETURN_IF_ERROR(CheckDivisible(c.num_attention_heads, "num_attention_heads", shard));
  if (c.num_key_value_heads >= shard.size || shard.size % c.num_key_value_heads != 0) {
    // Fewer KV heads than ranks is fine when the ranks split evenly over them.
    RETURN_IF_ERROR(CheckDivisible(c.num_key_value_heads, "num_key_value_heads", shard));
  }
  RETURN_IF_ERROR(CheckDivisible(c.intermediate_size, "intermediate_size", shard));

  LlamaWeights w;
  const WeightStore& s = *store;
  const int64_t hidden = c.hidden_size;
  const int64_t hd = c.head_dim;
  const ShardRange heads = EvenShard(c.num_attention_heads, shard);
  const ShardRange kv_heads = KvHeadShard(c.num_key_value_heads, shard);
  const ShardRange ffn = EvenShard(c.intermediate_size, shard);
  const ShardRange q_rows{heads.begin * hd, heads.length * hd};
  const ShardRange kv_rows{kv_heads.begin * hd, kv_heads.length * hd};
  const VocabShard vocab = VocabShardOf(c.vocab_size, shard);
  w.dims = {heads.length, kv_heads.length, ffn.length, vocab};

  // A linear layer: from the checkpoint's quantized tensors when it stores
  // this module quantized, else its float `.weight` (sliced in place).
  auto linear = [&](const std::string& module, int64_t out, int64_t in,
                    const LinearSlice& slice) -> absl::StatusOr<kernels::WeightRef> {
    if (quant.QuantizesModule(module)) {
      return LoadQuantizedLinear(s, quant, module, out, in, slice, w.quantized);
    }
    ASSIGN_OR_RETURN(TensorView t, GetFloat(s, module + ".weight", {out, in}));
    return slice.axis == LinearSlice::kRows ? RowSlice(t, slice.range) : ColumnSlice(t, slice.range);
  };

  ASSIGN_OR_RETURN(TensorView embed, GetFloat(s, "model.embed_tokens.weight", {c.vocab_size, hidden}));
  w.embed = RowSlice(embed, vocab.range);
  const bool own_head = !c.tie_word_embeddings &&
                        (s.Contains("lm_head.weight") || s.Contains("lm_head.weight_packed"));
  if (own_head) {
    ASSIGN_OR_RETURN(w.lm_head, linear("lm_head", c.vocab_size, hidden, {LinearSlice::kRows, vocab.range}));
  } else {
    w.lm_head = w.embed;  // tied (or no head stored): the embedding, in float
  }
  ASSIGN_OR_RETURN(TensorView norm, GetFloat(s, "model.norm.weight", {hidden}));
  w.final_norm = WholeMatrix(norm);

  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    LlamaLayerWeights l;
    ASSIGN_OR_RETURN(TensorView in_norm, GetFloat(s, p + "input_layernorm.weight", {hidden}));
    ASSIGN_OR_RETURN(TensorView post_norm, GetFloat(s, p + "post_attention_layernorm.weight", {hidden}));
    l.input_norm = WholeMatrix(in_norm);
    l.post_norm = WholeMatrix(post_norm);
    const int64_t q_dim = c.num_attention_heads * hd;
    const int64_t kv_dim = c.num_key_value_heads * hd;
    using S = LinearSlice;
    ASSIGN_OR_RETURN(l.q_proj, linear(p + "self_attn.q_proj", q_dim, hidden, {S::kRows, q_rows}));
    ASSIGN_OR_RETURN(l.k_proj, linear(p + "self_attn.k_proj", kv_dim, hidden, {S::kRows, kv_rows}));
    ASSIGN_OR_RETURN(l.v_proj, linear(p + "self_attn.v_proj", kv_dim, hidden, {S::kRows, kv_rows}));
    ASSIGN_OR_RETURN(l.o_proj, linear(p + "self_attn.o_proj", hidden, q_dim, {S::kColumns, q_rows}));
    ASSIGN_OR_RETURN(l.gate_proj, linear(p + "mlp.gate_proj", c.intermediate_size, hidden, {S::kRows, ffn}));
    ASSIGN_OR_RETURN(l.up_proj, linear(p + "mlp.up_proj", c.intermediate_size, hidden, {S::kRows, ffn}));
    ASSIGN_OR_RETURN(l.down_proj, linear(p + "mlp.down_proj", hidden, c.intermediate_size, {S::kColumns, ffn}));
    if (c.attention_bias) {
      ASSIGN_OR_RETURN(TensorView qb, GetFloat(s, p + "self_attn.q_proj.bias", {c.num_attention_heads * hd}));
      ASSIGN_OR_RETURN(TensorView kb, GetFloat(s, p + "self_attn.k_proj.bias", {c.num_key_value_heads * hd}));
      ASSIGN_OR_RETURN(TensorView vb, GetFloat(s, p + "self_attn.v_proj.bias", {c.num_key_value_heads * hd}));
      l.q_bias = SliceToFloat(qb, q_rows);
      l.k_bias = SliceToFloat(kb, kv_rows);
      l.v_bias = SliceToFloat(vb, kv_rows);
    }
    if (c.o_proj_bias) {
      ASSIGN_OR_RETURN(TensorView ob, GetFloat(s, p + "self_attn.o_proj.bias", {hidden}));
      l.o_bias = SliceToFloat(ob, {0, hidden});
    }
    if (c.mlp_bias) {
      ASSIGN_OR_RETURN(TensorView gb, GetFloat(s, p + "mlp.gate_proj.bias", {c.intermediate_size}));
      ASSIGN_OR_RETURN(TensorView ub, GetFloat(s, p + "mlp.up_proj.bias", {c.intermediate_size}));
      ASSIGN_OR_RETURN(TensorView db, GetFloat(s, p + "mlp.down_proj.bias", {hidden}));
      l.gate_bias = SliceToFloat(gb, ffn);
      l.up_bias = SliceToFloat(ub, ffn);
      l.down_bias = SliceToFloat(db, {0, hidden});
    }
    w.layers.push_back(std::move(l));
  }
  w.store = std::move(store);
  return w;
}

}  // namespace tandem
