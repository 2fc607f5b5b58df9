// Keeps a worker registered with the router: Register at start and as a
// heartbeat every interval the router asks for, and the draining Register
// when the worker starts to drain. Each Register carries the prefix cache's
// changes since the last one this router said it applied (or a snapshot),
// for its cache-aware routing.
// Thread-safety: built and destroyed by one owner; SetDraining from any
// thread; the heartbeats run on a thread of their own.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/grpc/cluster_tls.h"
#include "engine/core/kv_event_log.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// A fresh incarnation id: 16 hex digits from std::random_device. A worker
// process picks one at start and sends it in every RegisterRequest (to every
// router), so a router tells a restarted worker (same id, maybe the same
// address) from the process it knew.
std::string NewWorkerIncarnation();

// Re-registers with the router every interval until destroyed.
class RouterRegistration {
 public:
  // `tls`: how the router is dialed (mTLS expecting its role certificate, or plaintext).
  // `kv_events` (may be null: none sent) is the engine's event log.
  RouterRegistration(std::string router_address, v1::RegisterRequest request,
                     std::shared_ptr<const ClusterTls> tls = ClusterTls::Insecure(),
                     std::shared_ptr<const KvEventLog> kv_events = nullptr);
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
  const std::shared_ptr<const ClusterTls> tls_;
  const std::shared_ptr<const KvEventLog> kv_events_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;           // guarded by mu_
  bool draining_ = false;       // guarded by mu_
  bool draining_sent_ = false;  // guarded by mu_: a draining Register was answered
  std::thread thread_;
};

}  // namespace tandem
