#include "worker/worker_model.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/core/model_executor.h"
#include "engine/model/tp_shard.h"
#include "kv_transfer/loopback/loopback_transport.h"
#ifdef TANDEM_HAVE_UCX
#include "kv_transfer/ucx/ucx_transport.h"
#endif

namespace tandem {

absl::StatusOr<WorkerModel> LoadWorkerModel(const std::string& model_dir, const EngineConfig& config, int tp,
                                            std::chrono::milliseconds release_grace) {
  ASSIGN_OR_RETURN(std::unique_ptr<ModelExecutor> model, LoadExecutor(model_dir, tp, config.precision, config.quantization));
  WorkerModel w;
  w.config = model->config();
  ASSIGN_OR_RETURN(std::unique_ptr<LlmEngine> engine, LlmEngine::Create(std::move(model), config));
  for (int r = 0; r < engine->tp_size(); ++r) {
    KvCache& cache = engine->kv_cache(r);
    const std::span<uint8_t> memory = cache.Memory();
    const ShardRange heads = KvHeadShard(w.config.num_key_value_heads, {r, engine->tp_size()});
    w.ranks.push_back({cache.shape(), heads.begin, memory.data(), memory.size()});
  }
  w.engine = std::make_unique<AsyncEngine>(std::move(engine), nullptr, release_grace);
  RETURN_IF_ERROR(w.engine->WarmUp());  // on the engine's own thread (async_engine.h)
  return w;
}

absl::StatusOr<RankTransports> RegisterRankPools(const std::string& transport_name, const WorkerModel& model) {
  RankTransports out;
  for (const RankKvPool& pool : model.ranks) {
    ASSIGN_OR_RETURN(std::unique_ptr<KvTransport> t, MakeTransport(transport_name));
    ASSIGN_OR_RETURN(MemoryDescriptor d, t->RegisterMemory(pool.base, pool.bytes));
    out.transports.push_back(std::move(t));
    out.descriptors.push_back(std::move(d));
  }
  return out;
}

v1::KvLayout RankKvLayout(const WorkerModel& model, int rank) {
  const KvCacheShape& shape = model.ranks[rank].shape;
  v1::KvLayout l;
  l.set_num_layers(static_cast<uint32_t>(shape.num_layers));
  l.set_block_size(static_cast<uint32_t>(shape.block_size));
  l.set_num_kv_heads(static_cast<uint32_t>(shape.num_kv_heads));
  l.set_head_dim(static_cast<uint32_t>(shape.head_dim));
  l.set_dtype(std::string(DTypeName(shape.dtype)));
  l.set_block_span_bytes(static_cast<uint64_t>(shape.block_span_bytes()));
  l.set_layer_bytes(static_cast<uint64_t>(shape.layer_bytes()));
  l.set_tp_rank(static_cast<uint32_t>(rank));
  l.set_tp_size(static_cast<uint32_t>(model.ranks.size()));
  l.set_kv_head_begin(static_cast<uint32_t>(model.ranks[rank].kv_head_begin));
  l.set_total_kv_heads(static_cast<uint32_t>(model.config.num_key_value_heads));
  return l;
}

KvRegionLayout RankRegionLayout(const WorkerModel& model, int rank) {
  const KvCacheShape& shape = model.ranks[rank].shape;
  return {shape.num_layers, shape.num_blocks, shape.block_span_bytes(), shape.num_kv_heads};
}

absl::StatusOr<std::unique_ptr<KvTransport>> MakeTransport(const std::string& name) {
  if (name == "loopback") {
    static auto* fabric = new std::shared_ptr<LoopbackFabric>(std::make_shared<LoopbackFabric>());
    return std::unique_ptr<KvTransport>(std::make_unique<LoopbackTransport>(*fabric));
  }
#ifdef TANDEM_HAVE_UCX
  if (name == "ucx" || name == "ucx-rma") {
    // "ucx": every put is a message the decode worker checks against its
    // reservations (kv_transfer/kv_put_guard.h), whatever UCX_TLS allows.
    // "ucx-rma": one-sided puts where UCX can do them (CMA, RDMA): one copy
    // less, but unchecked: a late put can land in reused blocks once the
    // release grace has passed, and a descriptor's holder can write anywhere
    // in the pool (docs/security.md).
    UcxTransportOptions options;
    options.put_mode =
        name == "ucx" ? UcxTransportOptions::PutMode::kMessages : UcxTransportOptions::PutMode::kAuto;
    ASSIGN_OR_RETURN(std::unique_ptr<UcxTransport> t, UcxTransport::Create(options));
    return std::unique_ptr<KvTransport>(std::move(t));
  }
#endif
  return absl::InvalidArgumentError(
      absl::StrCat("--kv-transport '", name, "': must be ucx, ucx-rma or loopback"));
}

}  // namespace tandem
