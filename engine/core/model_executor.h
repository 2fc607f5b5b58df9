// ModelExecutor: runs one forward step of a model replica, which may be one
// rank or a tensor-parallel group of ranks, each with its own KV cache (its
// share of the KV heads). The scheduler and block manager see one pool of
// block ids; every rank's cache has the same blocks.
//
// The tensor-parallel executor runs ranks as threads of this process, joined
// by CPU-thread communicators; each rank gets its share of the cores for its
// OpenMP kernels.
// Thread-safety: Forward() from one thread at a time (the engine loop).
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/kv_cache.h"
#include "engine/model/llama_model.h"

namespace tandem {

class ModelExecutor {
 public:
  virtual ~ModelExecutor() = default;
  virtual const ModelConfig& config() const = 0;
  virtual int tp_size() const = 0;
  // Whether an fp8 KV cache's static scales come from the checkpoint (else 1.0).
  virtual bool kv_cache_scales_from_checkpoint() const = 0;
  // The KV shape of `rank` for `num_blocks` blocks.
  virtual KvCacheShape KvShape(int rank, int64_t num_blocks, int64_t block_size, DType dtype) const = 0;
  // Allocates every rank's cache. Call once, before Forward().
  virtual void AllocateKvCaches(int64_t num_blocks, int64_t block_size, DType dtype) = 0;
  virtual KvCache& kv_cache(int rank) = 0;
  // One step on every rank; returns the logits (identical on every rank).
  // `listener` hears every rank's layers, each from that rank's thread.
  virtual absl::StatusOr<std::vector<float>> Forward(const ForwardBatch& batch, LayerKvListener* listener) = 0;
};

// One rank: the model itself.
std::unique_ptr<ModelExecutor> MakeSingleExecutor(std::unique_ptr<LlamaModel> model);

// Loads `dir` as `tp_size` ranks (threads). InvalidArgument for splits the
// model does not allow (heads, KV heads or FFN not divisible).
// `precision`: the matmul arithmetic (--dtype); `quantization`: the weight
// quantization at load (--quantization), each rank quantizing its shard.
absl::StatusOr<std::unique_ptr<ModelExecutor>> LoadExecutor(
    const std::filesystem::path& dir, int tp_size,
    kernels::MatMulPrecision precision = kernels::MatMulPrecision::kF32, QuantizationConfig quantization = {});

}  // namespace tandem
