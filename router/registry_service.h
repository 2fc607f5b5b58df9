// tandem.v1.WorkerRegistry on the router: workers announce themselves (and
// re-announce as a heartbeat); each lands in the WorkerPool.
// Thread-safety: gRPC callback threads; WorkerPool is thread-safe.
#pragma once

#include "router/worker_pool.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

class RegistryService final : public v1::WorkerRegistry::CallbackService {
 public:
  explicit RegistryService(WorkerPool* pool) : pool_(pool) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx, const v1::RegisterRequest* req,
                                     v1::RegisterResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    if (req->address().empty() || req->worker_id().empty() ||
        (req->role() != v1::WORKER_ROLE_PREFILL && req->role() != v1::WORKER_ROLE_DECODE)) {
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "worker_id, address and role are required"));
      return reactor;
    }
    pool_->Add(req->role(), req->worker_id(), req->address(), /*registered=*/true);
    resp->set_heartbeat_interval_ms(2000);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest*,
                                        v1::ListWorkersResponse* resp) override {
    for (v1::WorkerInfo& w : pool_->List()) *resp->add_workers() = std::move(w);
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  WorkerPool* const pool_;
};

}  // namespace tandem
