// The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM) on the CPU
// backend: embedding, N x (RMSNorm, attention with RoPE and GQA, RMSNorm,
// SwiGLU MLP), final RMSNorm, LM head (tied or not).
//
// Weights stay in their file dtype (F32/F16/BF16) inside the memory mapping;
// all arithmetic is fp32 except, with MatMulPrecision::kBf16, the matmuls'
// inputs (rounded to BF16; see kernels::MatMulBf16), and, with
// Quantization::kInt8, the linear layers (W8A8, kernels::MatMulInt8: weights
// quantized once at load into owned memory; kFp8 likewise, W8A16,
// kernels::MatMulFp8; kInt4, W4A16, kernels::MatMulInt4: group-wise int4
// weights, fp32 activations). Each layer loads only its tensor-parallel shard
// (TpShard), so tensor parallelism adds a communicator, not model code.
//
// Thread-safety: Forward() is not re-entrant (it reuses scratch buffers); the
// engine loop calls it from one thread. Internally it uses OpenMP threads.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kernels/ops.h"
#include "engine/model/forward_batch.h"
#include "engine/model/kv_cache.h"
#include "engine/model/kv_cache_scales.h"
#include "engine/model/model_config.h"
#include "engine/model/tp_shard.h"
#include "engine/parallel/communicator.h"

namespace tandem {

// Told, during Forward(), when each layer's K/V for the batch is in a rank's
// cache (so a transfer of that layer can start while later layers compute).
// With tensor parallelism every rank reports its own cache, from the thread
// running that rank: calls for different ranks may be concurrent.
class LayerKvListener {
 public:
  virtual ~LayerKvListener() = default;
  // Runs on the thread that called this rank's Forward(); must not block for long.
  virtual void OnLayerKvWritten(int tp_rank, int64_t layer) = 0;
};

// Shown every linear layer's input during Forward() (calibration for
// offline quantization: `tandem quantize` records per-channel maxima).
// The four sites are the inputs the layers of a decoder block read: the
// normed hidden state (q, k, v), the attention output (o), the second
// normed state (gate, up) and the SwiGLU product (down). Called on the
// thread running Forward(), rank by rank with tensor parallelism (cols is
// the rank's width: its slice for the o and down inputs).
class ActivationObserver {
 public:
  enum class Site : uint8_t { kQkvInput, kOInput, kGateUpInput, kDownInput };
  virtual ~ActivationObserver() = default;
  // x: [rows][cols], row-major, valid during the call only.
  virtual void OnLinearInput(int64_t layer, Site site, const float* x, int64_t rows, int64_t cols) = 0;
  // The K (after RoPE) and V rows a layer writes into the KV cache, [rows][kv_dim]
  // each (kv_dim = this rank's KV heads x head_dim), before any KV quantization.
  virtual void OnKvWritten(int64_t layer, const float* k, const float* v, int64_t rows, int64_t kv_dim) {}
};

// Weight quantization applied at load (`--quantization`).
enum class Quantization : uint8_t {
  kNone,  // every weight as stored in the file
  kInt8,  // W8A8 for q/k/v/o and gate/up/down: per-row int8 weights,
          // per-token int8 activations, int32 sums (kernels::MatMulInt8)
  kFp8,   // W8A16 for the same layers: per-row-scaled FP8 E4M3 weights, fp32
          // activations and sums (kernels::MatMulFp8)
  kInt4,  // W4A16 for q/k/v/o and gate/up/down: group-wise int4 weights
          // (round to nearest at load), fp32 activations (kernels::MatMulInt4)
};

struct QuantizationConfig {
  Quantization scheme = Quantization::kNone;
  // With a scheme: whether the LM head is quantized too. Off by default: on
  // the bundled model the head in its file dtype keeps perplexity closer to
  // the unquantized model (docs/quantization.md has both). Embeddings and
  // norms always stay in the file's dtype.
  bool lm_head = false;
};

class LlamaModel {
 public:
  // Reads config and weights from an HF directory and validates every tensor's
  // presence and shape. Errors name the file and the tensor. With
  // shard.size > 1, `comm` (borrowed; rank and size matching `shard`) carries
  // the all-reduces and all-gathers, and every rank must call Forward() with
  // the same batch at the same time. InvalidArgument for impossible splits.
  // `precision` picks the matmul arithmetic (fp32 reference or BF16) of the
  // matmuls `quantization` leaves unquantized. A tensor-parallel rank
  // quantizes its own shard (scales are per output row of the shard).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(
      const std::filesystem::path& dir, TpShard shard = {}, Communicator* comm = nullptr,
      kernels::MatMulPrecision precision = kernels::MatMulPrecision::kF32,
      QuantizationConfig quantization = {});
  ~LlamaModel();

  const ModelConfig& config() const;
  // The KV-cache shape this rank needs for `num_blocks` blocks of `block_size`
  // tokens stored as `dtype`.
  KvCacheShape MakeKvCacheShape(int64_t num_blocks, int64_t block_size,
                                DType dtype = DType::kF32) const;
  // The static scales an fp8 KV cache is written and read with (this rank's
  // heads): the checkpoint's k_scale/v_scale, else 1.0 (kv_cache_scales.h).
  const KvCacheScales& kv_cache_scales() const;

  // Runs one step over `batch`: writes its tokens' K/V into `cache` at their
  // slots, and returns logits, row-major [batch.logit_indices.size()][vocab].
  // Errors: InvalidArgument for inconsistent batches (token ids out of the
  // vocabulary, slots outside the cache, context shorter than the query).
  // `listener` (may be null) hears about each layer as its K/V is written.
  absl::StatusOr<std::vector<float>> Forward(const ForwardBatch& batch, KvCache& cache,
                                             LayerKvListener* listener = nullptr);

  // Installs (or, with null, removes) the observer later Forward() calls
  // report to. Borrowed; not thread-safe against a running Forward().
  void SetActivationObserver(ActivationObserver* observer);

 private:
  struct Impl;
  explicit LlamaModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
