// What both worker roles do at start and while they live: load the model
// into an AsyncEngine, register its KV pool with the KV transport, serve
// gRPC, and keep themselves registered with the router.
// Thread-safety: built and torn down from main(); the heartbeat runs on its
// own thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/core/async_engine.h"
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

// Re-registers with the router every interval until destroyed.
class RouterRegistration {
 public:
  RouterRegistration(std::string router_address, v1::RegisterRequest request);
  ~RouterRegistration();

  // Tells the router this worker is draining: re-registers at once with
  // `draining` set (and every heartbeat after carries it), so the router
  // stops sending it work. Returns once that call got its answer or failed
  // (bounded: a few seconds when the router is unreachable).
  void SetDraining();

 private:
  void Run();
  const std::string router_address_;
  const v1::RegisterRequest request_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;           // guarded by mu_
  bool draining_ = false;       // guarded by mu_
  bool draining_sent_ = false;  // guarded by mu_: a draining Register was answered
  std::thread thread_;
};

// Blocks SIGINT and SIGTERM in this thread and every thread started later;
// WaitForStopSignal() then returns the one that arrives.
void BlockStopSignals();
int WaitForStopSignal();
// As WaitForStopSignal(), but 0 when none arrived within `timeout`.
int WaitForStopSignalFor(std::chrono::milliseconds timeout);

// The drain after a stop signal: polls `idle` until it has held for 100 ms
// (so work that was handed between two counters, e.g. a reservation the
// engine's stats do not show yet, is seen) or `timeout` passes. True when
// idle at the end; false when the timeout cut the drain short.
bool WaitUntilIdle(const std::function<bool()>& idle, std::chrono::milliseconds timeout);

}  // namespace tandem
