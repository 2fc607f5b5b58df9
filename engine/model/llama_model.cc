// Forward pass of the Llama family over a flat, paged batch.
#include "engine/model/llama_model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/kernels/fp8_matmul.h"
#include "engine/kernels/int4_matmul.h"
#include "engine/kernels/int8_matmul.h"
#include "engine/kernels/ops.h"
#include "engine/kernels/paged_attention.h"
#include "engine/model/huge_page_buffer.h"
#include "engine/model/llama_weights.h"
#include "engine/model/rope.h"

namespace tandem {

struct LlamaModel::Impl {
  Impl(ModelConfig c, TpShard s, LlamaWeights w, RopeTable r, Communicator* comm_or_null)
      : config(std::move(c)), shard(s), weights(std::move(w)), rope(std::move(r)), comm(comm_or_null) {}

  ModelConfig config;
  TpShard shard;
  LlamaWeights weights;
  RopeTable rope;
  Communicator* comm = nullptr;  // null when shard.size == 1
  KvCacheScales kv_scales;       // used only by fp8 KV caches
  ActivationObserver* observer = nullptr;
  kernels::MatMulPrecision precision = kernels::MatMulPrecision::kF32;
  // --dtype bfloat16 on AMX: the matmul weights repacked into the AMX
  // kernel's tile order (the refs' amx_tiles point here). Costs a second copy
  // of the weights in memory; the file's pages of them are then untouched
  // (the OS may drop them) except the embedding rows.
  std::vector<HugePageBuffer> amx_weights;
  // --quantization int8: the quantized matrices (the refs' int8 point here).
  std::vector<std::unique_ptr<kernels::Int8Weight>> int8_weights;
  // --quantization int4: the quantized matrices (the refs' int4 point here).
  std::vector<std::unique_ptr<kernels::Int4Weight>> int4_weights;

  void QuantizeInt8(kernels::WeightRef& w) {
    if (w.data == nullptr) return;
    int8_weights.push_back(std::make_unique<kernels::Int8Weight>(kernels::QuantizeWeightInt8(w)));
    w.int8 = int8_weights.back().get();
  }
  // --quantization fp8: likewise (the refs' fp8 point here).
  std::vector<std::unique_ptr<kernels::Fp8Weight>> fp8_weights;
  void QuantizeFp8(kernels::WeightRef& w) {
    if (w.data == nullptr) return;
    fp8_weights.push_back(std::make_unique<kernels::Fp8Weight>(kernels::QuantizeWeightFp8(w)));
    w.fp8 = fp8_weights.back().get();
  }

  void QuantizeInt4(kernels::WeightRef& w) {
    if (w.data == nullptr) return;
    int4_weights.push_back(std::make_unique<kernels::Int4Weight>(kernels::QuantizeWeightInt4(w)));
    w.int4 = int4_weights.back().get();
  }

  void PackForAmx(kernels::WeightRef& w) {
    if (w.dtype != DType::kBF16 || w.data == nullptr || w.int8 != nullptr || w.fp8 != nullptr ||
        w.int4 != nullptr) {
      return;
    }
    HugePageBuffer buf(static_cast<size_t>(kernels::AmxPackedElems(w.rows, w.cols)) * 2);
    kernels::PackBf16ForAmx(w, reinterpret_cast<uint16_t*>(buf.data()));
    w.amx_tiles = reinterpret_cast<const uint16_t*>(buf.data());
    amx_weights.push_back(std::move(buf));
  }

  // Every matmul of the model, in the precision it was loaded with.
  void MatMul(const float* x, int64_t m, const kernels::WeightRef& w, const float* bias, float* y) {
    if (w.input_perm != nullptr) {  // reorder the inputs the way the columns were
      permuted.resize(static_cast<size_t>(m * w.cols));
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < w.cols; ++j) permuted[i * w.cols + j] = x[i * w.cols + w.input_perm[j]];
      }
      x = permuted.data();
    }
    if (w.int8 != nullptr) {
      kernels::MatMulInt8(x, m, *w.int8, bias, y);
    } else if (w.fp8 != nullptr) {
      kernels::MatMulFp8(x, m, *w.fp8, bias, y);
    } else if (w.int4 != nullptr) {
      kernels::MatMulInt4(x, m, *w.int4, bias, y);
    } else if (precision == kernels::MatMulPrecision::kBf16) {
      kernels::MatMulBf16(x, m, w, bias, y);
    } else {
      kernels::MatMul(x, m, w, bias, y);
    }
  }

  // Scratch reused across steps (Forward is not re-entrant).
  std::vector<float> x, h, q, k, v, attn, proj, gate, up, cos, sin, permuted;

  void Observe(int64_t layer, ActivationObserver::Site site, const std::vector<float>& x, int64_t rows,
               int64_t cols) {
    if (observer != nullptr) observer->OnLinearInput(layer, site, x.data(), rows, cols);
  }

  void AllReduce(std::vector<float>& buf, int64_t n) {
    if (comm != nullptr) comm->AllReduceSum(buf.data(), n);
  }
  void Embed(const ForwardBatch& b);
  std::vector<float> LmHead(std::vector<float>& selected, int64_t rows);

  absl::Status ValidateBatch(const ForwardBatch& b, const KvCache& cache) const;
  void AttentionBlock(const ForwardBatch& b, KvCache& cache, int64_t layer, LayerKvListener* listener);
  void MlpBlock(int64_t layer, int64_t n);
};

namespace {

void AddInPlace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

const float* OrNull(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

// x[t][:] += y[t][:] + bias[:] for each of n rows of width d (bias may be empty).
void AddResidual(float* x, const float* y, const std::vector<float>& bias, int64_t n, int64_t d) {
  AddInPlace(x, y, n * d);
  if (bias.empty()) return;
  for (int64_t t = 0; t < n; ++t) AddInPlace(x + t * d, bias.data(), d);
}

}  // namespace

absl::Status LlamaModel::Impl::ValidateBatch(const ForwardBatch& b, const KvCache& cache) const {
  const int32_t n = b.num_tokens();
  if (n == 0) return absl::InvalidArgumentError("empty batch");
  if (b.positions.size() != static_cast<size_t>(n) || b.slot_mapping.size() != static_cast<size_t>(n)) {
    return absl::InvalidArgumentError("token_ids, positions and slot_mapping differ in length");
  }
  const KvCacheShape& cs = cache.shape();
  if (cs.num_layers != config.num_hidden_layers || cs.num_kv_heads != weights.dims.num_kv_heads ||
      cs.head_dim != config.head_dim) {
    return absl::InvalidArgumentError("KV cache shape does not match the model");
  }
  for (int32_t t = 0; t < n; ++t) {
    if (b.token_ids[t] < 0 || b.token_ids[t] >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", b.token_ids[t],
                                                     " outside the vocabulary of ", config.vocab_size));
    }
    if (b.slot_mapping[t] < 0 || b.slot_mapping[t] >= cs.num_slots()) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", b.slot_mapping[t], " outside the cache"));
    }
  }
  int32_t token = 0;
  for (const SequenceSlice& s : b.seqs) {
    if (s.num_query_tokens <= 0 || s.context_len < s.num_query_tokens ||
        static_cast<int64_t>(s.block_table.size()) * cs.block_size < s.context_len) {
      return absl::InvalidArgumentError("sequence slice with inconsistent lengths or block table");
    }
    for (int32_t block : s.block_table) {
      if (block < 0 || block >= cs.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("block id ", block, " outside the cache"));
      }
    }
    for (int32_t i = 0; i < s.num_query_tokens; ++i, ++token) {
      if (token >= n || b.positions[token] < 0 || b.positions[token] >= s.context_len) {
        return absl::InvalidArgumentError("token position outside its sequence's context");
      }
    }
  }
  if (token != n) return absl::InvalidArgumentError("sequence slices do not cover the batch");
  for (int32_t idx : b.logit_indices) {
    if (idx < 0 || idx >= n) return absl::InvalidArgumentError("logit index outside the batch");
  }
  return absl::OkStatus();
}

void LlamaModel::Impl::AttentionBlock(const ForwardBatch& b, KvCache& cache, int64_t layer,
                                      LayerKvListener* listener) {
  const LlamaLayerWeights& lw = weights.layers[layer];
  const int64_t n = b.num_tokens();
  const int64_t hd = config.head_dim;
  const int64_t q_dim = weights.dims.num_heads * hd;
  const int64_t kv_dim = weights.dims.num_kv_heads * hd;
  kernels::RmsNorm(x.data(), n, config.hidden_size, lw.input_norm, config.rms_norm_eps, h.data());
  Observe(layer, ActivationObserver::Site::kQkvInput, h, n, config.hidden_size);
  MatMul(h.data(), n, lw.q_proj, OrNull(lw.q_bias), q.data());
  MatMul(h.data(), n, lw.k_proj, OrNull(lw.k_bias), k.data());
  MatMul(h.data(), n, lw.v_proj, OrNull(lw.v_bias), v.data());
  kernels::ApplyRope(q.data(), n, q_dim, weights.dims.num_heads, hd, cos.data(), sin.data());
  kernels::ApplyRope(k.data(), n, kv_dim, weights.dims.num_kv_heads, hd, cos.data(), sin.data());
  if (observer != nullptr) observer->OnKvWritten(layer, k.data(), v.data(), n, kv_dim);
  const kernels::KvHeadScales fp8_scales{kv_scales.k_layer(layer), kv_scales.v_layer(layer)};
  kernels::WriteKv(b, cache, layer, k.data(), v.data(), kv_dim, fp8_scales);
  if (listener != nullptr) listener->OnLayerKvWritten(shard.rank, layer);
  const kernels::AttentionShape shape{weights.dims.num_heads, weights.dims.num_kv_heads, hd,
                                      static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd))),
                                      config.sliding_window};
  kernels::PagedAttention(b, cache, layer, shape, q.data(), q_dim, attn.data(), fp8_scales);
  Observe(layer, ActivationObserver::Site::kOInput, attn, n, q_dim);
  MatMul(attn.data(), n, lw.o_proj, nullptr, proj.data());
  AllReduce(proj, n * config.hidden_size);  // row-parallel: sum the ranks' partial outputs, then the bias
  AddResidual(x.data(), proj.data(), lw.o_bias, n, config.hidden_size);
}

void LlamaModel::Impl::MlpBlock(int64_t layer, int64_t n) {
  const LlamaLayerWeights& lw = weights.layers[layer];
  kernels::RmsNorm(x.data(), n, config.hidden_size, lw.post_norm, config.rms_norm_eps, h.data());
  Observe(layer, ActivationObserver::Site::kGateUpInput, h, n, config.hidden_size);
  MatMul(h.data(), n, lw.gate_proj, OrNull(lw.gate_bias), gate.data());
  MatMul(h.data(), n, lw.up_proj, OrNull(lw.up_bias), up.data());
  kernels::SiluMul(gate.data(), up.data(), n, weights.dims.ffn, gate.data());
  Observe(layer, ActivationObserver::Site::kDownInput, gate, n, weights.dims.ffn);
  MatMul(gate.data(), n, lw.down_proj, nullptr, proj.data());
  AllReduce(proj, n * config.hidden_size);
  AddResidual(x.data(), proj.data(), lw.down_bias, n, config.hidden_size);
}

LlamaModel::LlamaModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LlamaModel::~LlamaModel() = default;

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::filesystem::path& dir, TpShard shard,
                                                             Communicator* comm,
                                                             kernels::MatMulPrecision precision,
                                                             QuantizationConfig quantization) {
  if (shard.size > 1 && (comm == nullptr || comm->size() != shard.size || comm->rank() != shard.rank)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor-parallel rank ", shard.rank, " of ", shard.size, " needs a matching communicator"));
  }
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store, WeightStore::Open(dir));
  ASSIGN_OR_RETURN(KvCacheScales kv_scales, LoadKvCacheScales(*store, config, shard));
  ASSIGN_OR_RETURN(CheckpointQuantization stored, LoadCheckpointQuantization(dir));
  if (stored.quantized() && quantization.scheme != Quantization::kNone) {
    // Re-quantizing already-quantized weights would compound two roundings.
    return absl::InvalidArgumentError(absl::StrCat(dir.string(), " is already quantized (", stored.Describe(),
                                                   "): load it with --quantization none"));
  }
  ASSIGN_OR_RETURN(LlamaWeights weights, LoadLlamaWeights(config, std::move(store), shard, stored));
  RopeTable rope(config.head_dim, config.rope_theta, config.rope_scaling);
  auto impl = std::unique_ptr<Impl>(new Impl{std::move(config), shard, std::move(weights), std::move(rope),
                                             shard.size > 1 ? comm : nullptr});
  impl->precision = precision;
  impl->kv_scales = std::move(kv_scales);
  if (quantization.scheme != Quantization::kNone) {
    // Each rank quantizes its own shard (a row-parallel o / down shard is a
    // column slice: int8/fp8 scales per row of it, int4 groups follow its width).
    auto quantize = [&](kernels::WeightRef& r) {
      switch (quantization.scheme) {
        case Quantization::kInt8:
          return impl->QuantizeInt8(r);
        case Quantization::kFp8:
          return impl->QuantizeFp8(r);
        case Quantization::kInt4:
          return impl->QuantizeInt4(r);
        case Quantization::kNone:
          return;
      }
    };
    LlamaWeights& w = impl->weights;
    for (LlamaLayerWeights& l : w.layers) {
      for (kernels::WeightRef* r : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj,
                                    &l.down_proj}) {
        quantize(*r);
      }
    }
    // A tied head quantizes its own copy; the embedding keeps reading rows.
    if (quantization.lm_head) quantize(w.lm_head);
  }
  if (precision == kernels::MatMulPrecision::kBf16 && kernels::ActiveCpuIsa() == kernels::CpuIsa::kAmx) {
    LlamaWeights& w = impl->weights;
    for (LlamaLayerWeights& l : w.layers) {
      for (kernels::WeightRef* r : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj,
                                    &l.down_proj}) {
        impl->PackForAmx(*r);
      }
    }
    // A tied LM head packs its own copy; the embedding keeps reading rows.
    impl->PackForAmx(w.lm_head);
  }
  return std::unique_ptr<LlamaModel>(new LlamaModel(std::move(impl)));
}

const ModelConfig& LlamaModel::config() const { return impl_->config; }

const KvCacheScales& LlamaModel::kv_cache_scales() const { return impl_->kv_scales; }

void LlamaModel::SetActivationObserver(ActivationObserver* observer) { impl_->observer = observer; }

KvCacheShape LlamaModel::MakeKvCacheShape(int64_t num_blocks, int64_t block_size,
                                          DType dtype) const {
  return {impl_->config.num_hidden_layers, num_blocks, block_size, impl_->weights.dims.num_kv_heads,
          impl_->config.head_dim, dtype};
}

absl::StatusOr<std::vector<float>> LlamaModel::Forward(const ForwardBatch& b, KvCache& cache,
                                                       LayerKvListener* listener) {
  Impl& m = *impl_;
  RETURN_IF_ERROR(m.ValidateBatch(b, cache));
  const int64_t n = b.num_tokens();
  const int64_t hidden = m.config.hidden_size;
  const int64_t hd = m.config.head_dim;
  m.x.resize(n * hidden);
  m.h.resize(n * hidden);
  m.proj.resize(n * hidden);
  m.q.resize(n * m.weights.dims.num_heads * hd);
  m.attn.resize(m.q.size());
  m.k.resize(n * m.weights.dims.num_kv_heads * hd);
  m.v.resize(m.k.size());
  m.gate.resize(n * m.weights.dims.ffn);
  m.up.resize(m.gate.size());

  m.Embed(b);
  m.rope.Compute(b.positions, m.cos, m.sin);
  for (int64_t layer = 0; layer < m.config.num_hidden_layers; ++layer) {
    m.AttentionBlock(b, cache, layer, listener);
    m.MlpBlock(layer, n);
  }

  // Only the rows whose logits are wanted go through the final norm and head.
  const int64_t rows = static_cast<int64_t>(b.logit_indices.size());
  std::vector<float> selected(rows * hidden);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(m.x.data() + b.logit_indices[r] * hidden, hidden, selected.data() + r * hidden);
  }
  kernels::RmsNorm(selected.data(), rows, hidden, m.weights.final_norm, m.config.rms_norm_eps,
                   selected.data());
  return m.LmHead(selected, rows);
}

void LlamaModel::Impl::Embed(const ForwardBatch& b) {
  const ShardRange& range = weights.dims.vocab.range;
  if (comm == nullptr) {
    kernels::EmbeddingLookup(weights.embed, b.token_ids, x.data());
    return;
  }
  // Vocab-parallel: each rank fills the rows of its ids, the all-reduce joins them.
  const int64_t hidden = config.hidden_size;
  std::fill(x.begin(), x.begin() + b.num_tokens() * hidden, 0.0f);
  for (int32_t t = 0; t < b.num_tokens(); ++t) {
    const int32_t id = b.token_ids[t];
    if (id < range.begin || id >= range.begin + range.length) continue;
    const int32_t local = static_cast<int32_t>(id - range.begin);
    kernels::EmbeddingLookup(weights.embed, std::span<const int32_t>(&local, 1), x.data() + t * hidden);
  }
  AllReduce(x, b.num_tokens() * hidden);
}

std::vector<float> LlamaModel::Impl::LmHead(std::vector<float>& selected, int64_t rows) {
  const int64_t vocab = config.vocab_size;
  std::vector<float> logits(rows * vocab);
  if (rows == 0) return logits;
  if (comm == nullptr) {
    MatMul(selected.data(), rows, weights.lm_head, nullptr, logits.data());
    return logits;
  }
  // Vocab-parallel: each rank computes its columns, padded so the all-gather
  // moves equal sizes; then [rank][row][padded] becomes [row][vocab].
  const VocabShard& vs = weights.dims.vocab;
  std::vector<float> local(rows * vs.padded_length, 0.0f);
  if (vs.range.length > 0) {
    std::vector<float> part(rows * vs.range.length);
    MatMul(selected.data(), rows, weights.lm_head, nullptr, part.data());
    for (int64_t r = 0; r < rows; ++r) {
      std::copy_n(part.data() + r * vs.range.length, vs.range.length, local.data() + r * vs.padded_length);
    }
  }
  std::vector<float> gathered(rows * vs.padded_length * shard.size);
  comm->AllGather(local.data(), rows * vs.padded_length, gathered.data());
  for (int rank = 0; rank < shard.size; ++rank) {
    const VocabShard other = VocabShardOf(vocab, {rank, shard.size});
    for (int64_t r = 0; r < rows; ++r) {
      std::copy_n(gathered.data() + (rank * rows + r) * vs.padded_length, other.range.length,
                  logits.data() + r * vocab + other.range.begin);
    }
  }
  return logits;
}

}  // namespace tandem
