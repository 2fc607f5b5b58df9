// What both worker roles do at start and while they live: load the model
// into an AsyncEngine, register its KV pool with the KV transport, serve
// gRPC, and keep themselves registered with the router.
// Thread-safety: built and torn down from main(); the heartbeat runs on its
// own thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "engine/core/async_engine.h"
#include "kv_transfer/transport.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

struct WorkerModel {
  std::unique_ptr<AsyncEngine> engine;
  KvCacheShape kv_shape;
  void* kv_base = nullptr;  // the KV pool (registered with the transport)
  size_t kv_bytes = 0;
  ModelConfig config;
};

// Loads `model_dir` into an engine with `config`, without a tokenizer
// (workers move token ids; the router owns text).
// `release_grace`: see AsyncEngine (decode workers hold released, never
// activated reservations that long).
absl::StatusOr<WorkerModel> LoadWorkerModel(const std::string& model_dir, const EngineConfig& config,
                                            std::chrono::milliseconds release_grace = std::chrono::milliseconds(0));

// "ucx" (UCX_TLS from the environment) or "loopback" (in-process only).
absl::StatusOr<std::unique_ptr<KvTransport>> MakeTransport(const std::string& name);

// Re-registers with the router every interval until destroyed.
class RouterRegistration {
 public:
  RouterRegistration(std::string router_address, v1::RegisterRequest request);
  ~RouterRegistration();

 private:
  void Run();
  const std::string router_address_;
  const v1::RegisterRequest request_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Blocks SIGINT and SIGTERM in this thread and every thread started later;
// WaitForStopSignal() then returns the one that arrives.
void BlockStopSignals();
int WaitForStopSignal();

}  // namespace tandem
