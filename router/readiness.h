// Readiness: whether the router can serve requests, published as it changes
// (the router's main publishes it as grpc.health.v1 status). Ready means a
// live, non-draining prefill and decode worker exist (WorkerPool::Ready())
// and the router itself is not draining.
//
// Update() runs on every registration (so a launcher that saw a worker in
// ListWorkers also sees the router SERVING) and on a timer in main (a
// registration's expiry is no event).
// Thread-safety: all methods are thread-safe; `publish` runs under the
// object's mutex, so publications arrive in order and never concurrently.
#pragma once

#include <functional>
#include <mutex>

#include "common/drain_gate.h"
#include "router/worker_pool.h"

namespace tandem {

class Readiness {
 public:
  // `pool` and `gate` must outlive this.
  Readiness(const WorkerPool* pool, const DrainGate* gate) : pool_(pool), gate_(gate) {}

  // Starts publishing: calls `publish` now with the current readiness, and
  // again on every change. Call once; before it, Update() only computes.
  void Attach(std::function<void(bool ready)> publish);

  // Recomputes readiness and publishes it if it changed; returns it.
  bool Update();

 private:
  const WorkerPool* const pool_;
  const DrainGate* const gate_;
  std::mutex mu_;
  std::function<void(bool)> publish_;  // guarded by mu_
  bool published_ = false;             // guarded by mu_: the last value published
};

}  // namespace tandem
