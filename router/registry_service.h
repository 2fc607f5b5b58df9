// tandem.v1.WorkerRegistry on the router: workers announce themselves (and
// re-announce as a heartbeat, flagged draining once they stop); each lands
// in the WorkerPool (a new incarnation of a known worker replaces it there),
// and the KV events a heartbeat carries go to the KvRouter's index. It
// answers whatever the router's health says: workers must be able to
// register with a router that is not ready yet.
// With mTLS (ClusterTls), a registration is taken only from a certificate of
// the role it registers (a prefill worker's certificate cannot register a
// decode worker, a router's neither), and ListWorkers answers any cluster
// certificate; without a certificate from the cluster CA no call gets here.
// Thread-safety: gRPC callback threads; WorkerPool is thread-safe.
#pragma once

#include "common/grpc/cluster_tls.h"
#include "common/net/host_port.h"
#include "router/kv_router.h"
#include "router/readiness.h"
#include "router/worker_pool.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

class RegistryService final : public v1::WorkerRegistry::CallbackService {
 public:
  // `pool` and `readiness` (may be null) must outlive the service.
  // `kv_router` (may be null: events ignored) takes the workers' KV events.
  explicit RegistryService(WorkerPool* pool, Readiness* readiness = nullptr,
                           std::shared_ptr<const ClusterTls> tls = ClusterTls::Insecure(),
                           KvRouter* kv_router = nullptr)
      : pool_(pool), readiness_(readiness), tls_(std::move(tls)), kv_router_(kv_router) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx, const v1::RegisterRequest* req,
                                     v1::RegisterResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    if (req->address().empty() || req->worker_id().empty() ||
        (req->role() != v1::WORKER_ROLE_PREFILL && req->role() != v1::WORKER_ROLE_DECODE)) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "worker_id, address and role are required"));
      return reactor;
    }
    // The router dials this address: refuse one gRPC would misread (an
    // unbracketed IPv6 literal's last group would be taken for the port).
    if (absl::Status st = net::SplitHostPort(req->address()).status(); !st.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(st.message())));
      return reactor;
    }
    const tls::ClusterRole role =
        req->role() == v1::WORKER_ROLE_PREFILL ? tls::ClusterRole::kPrefillWorker : tls::ClusterRole::kDecodeWorker;
    if (grpc::Status st = tls_->CheckPeer(*ctx, {role}, "Register"); !st.ok()) {
      reactor->Finish(st);
      return reactor;
    }
    if (req->kv_block_size() > 4096) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "kv_block_size must be at most 4096"));
      return reactor;
    }
    pool_->Add(req->role(), req->worker_id(), req->address(), /*registered=*/true, req->draining(),
               req->incarnation(), static_cast<int32_t>(req->kv_block_size()));
    // After Add: a new incarnation's Add has dropped what the old one held.
    if (kv_router_ != nullptr && req->has_kv_events()) {
      resp->set_kv_events_applied(
          kv_router_->ApplyEvents(req->role(), req->worker_id(), req->incarnation(), req->kv_events()));
    }
    if (readiness_ != nullptr) readiness_->Update();  // before the reply: ListWorkers never runs ahead of health
    resp->set_heartbeat_interval_ms(2000);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest*,
                                        v1::ListWorkersResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    const grpc::Status st = tls_->CheckPeer(
        *ctx, {tls::ClusterRole::kRouter, tls::ClusterRole::kPrefillWorker, tls::ClusterRole::kDecodeWorker},
        "ListWorkers");
    if (st.ok()) {
      for (v1::WorkerInfo& w : pool_->List()) *resp->add_workers() = std::move(w);
    }
    reactor->Finish(st);
    return reactor;
  }

 private:
  WorkerPool* const pool_;
  Readiness* const readiness_;
  const std::shared_ptr<const ClusterTls> tls_;
  KvRouter* const kv_router_;
};

}  // namespace tandem
