// The prefill worker's gRPC service (tandem.v1.PrefillWorker): runs a
// prompt's prefill on its AsyncEngine, ships the KV to the destination the
// decode worker reserved (KvSender), releases its own blocks, and returns the
// first token only after the transfer is flushed. Each Prefill holds a
// DrainGate ticket until it is done; once the gate drains, new Prefill calls
// get UNAVAILABLE (the router retries them on another prefill worker). A KV
// transfer that fails at the destination is ABORTED: the decode worker
// failed, and the router re-admits the request on another one.
// Thread-safety: gRPC callback threads call it; nothing here blocks them.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "common/drain_gate.h"
#include "common/grpc/cluster_tls.h"
#include "engine/core/async_engine.h"
#include "prefill_worker/kv_sender.h"
#include "prefill_worker/layer_shipper.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

class PrefillService final : public v1::PrefillWorker::CallbackService {
 public:
  // `engine`, `shipper` (installed as the engine's step observer), `sender`
  // and `gate` (may be null: never refuses) must outlive the service.
  // `tls`: with mTLS, Prefill is taken only from a router's certificate,
  // Stats from any cluster certificate.
  PrefillService(AsyncEngine* engine, LayerShipper* shipper, KvSender* sender, std::string worker_id,
                 DrainGate* gate = nullptr, std::shared_ptr<const ClusterTls> tls = ClusterTls::Insecure())
      : engine_(engine),
        shipper_(shipper),
        sender_(sender),
        gate_(gate),
        tls_(std::move(tls)),
        worker_id_(std::move(worker_id)) {}

  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* ctx, const v1::PrefillRequest* req,
                                    v1::PrefillResponse* resp) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* ctx, const v1::StatsRequest* req,
                                  v1::WorkerStats* resp) override;

  uint64_t kv_bytes_sent() const { return bytes_sent_.load(); }
  // Set once at start, before the first RPC (the id may depend on the bound port).
  void set_worker_id(std::string id) { worker_id_ = std::move(id); }
  // Set once at start, before the first RPC: receives, per prompt shipped
  // OK, the seconds from its first token being sampled to its KV flushed.
  void set_transfer_observer(std::function<void(double)> observe) { observe_transfer_ = std::move(observe); }

 private:
  AsyncEngine* const engine_;
  LayerShipper* const shipper_;
  KvSender* const sender_;
  DrainGate* const gate_;
  const std::shared_ptr<const ClusterTls> tls_;
  std::string worker_id_;
  std::function<void(double)> observe_transfer_;
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace tandem
