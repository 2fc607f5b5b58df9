// A worker's model: the checkpoint loaded as TP ranks into an AsyncEngine,
// each rank's KV pool registered with a KV transport of its own, and the
// KvLayout messages that describe the pools to peers. Both worker roles
// start this way.
// Thread-safety: built and torn down from main().
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/async_engine.h"
#include "kv_transfer/block_layout.h"
#include "kv_transfer/transport.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// One tensor-parallel rank's KV pool: its share of the KV heads of every block.
struct RankKvPool {
  KvCacheShape shape;
  int64_t kv_head_begin = 0;  // the first of its KV heads in the model's numbering
  void* base = nullptr;       // the pool's memory (registered with the rank's transport)
  size_t bytes = 0;
};

struct WorkerModel {
  std::unique_ptr<AsyncEngine> engine;
  std::vector<RankKvPool> ranks;  // one per TP rank, in rank order
  ModelConfig config;
};

// Loads `model_dir` as `tp` ranks into an engine with `config`, without a
// tokenizer (workers move token ids; the router owns text).
// `release_grace`: see AsyncEngine (decode workers hold released, never
// activated reservations that long). InvalidArgument for a TP size the
// model's heads do not split into.
absl::StatusOr<WorkerModel> LoadWorkerModel(const std::string& model_dir, const EngineConfig& config, int tp = 1,
                                            std::chrono::milliseconds release_grace = std::chrono::milliseconds(0));

// "ucx" (UCX_TLS from the environment) or "loopback" (in-process only).
absl::StatusOr<std::unique_ptr<KvTransport>> MakeTransport(const std::string& name);

// Every rank's pool registered with a transport of its own (as each rank of
// a multi-process or multi-GPU group would have), in rank order.
struct RankTransports {
  std::vector<std::unique_ptr<KvTransport>> transports;
  std::vector<MemoryDescriptor> descriptors;
};
absl::StatusOr<RankTransports> RegisterRankPools(const std::string& transport_name, const WorkerModel& model);

// The KvLayout message of rank `rank`'s pool.
v1::KvLayout RankKvLayout(const WorkerModel& model, int rank);
// The same layout as kv_transfer addresses it.
KvRegionLayout RankRegionLayout(const WorkerModel& model, int rank);

}  // namespace tandem
