// The decode worker's gRPC service (tandem.v1.DecodeWorker): thin glue over
// an AsyncEngine that owns the KV pool. Admit reserves destination blocks and
// answers where the prefill worker must put the prompt's KV; Decode activates
// the request once that KV is in place and streams token ids; Release frees
// whatever a request holds; Renew extends the leases of reservations the
// router still needs; Stats reports load for routing and metrics.
// Draining (DrainGate): new Admits get UNAVAILABLE, Decode streams of
// reservations already admitted still run; each Admit and Decode holds a
// ticket until done (reservations waiting for KV show in engine Stats).
// Thread-safety: gRPC callback threads call it; nothing here blocks them.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/drain_gate.h"
#include "engine/core/async_engine.h"
#include "kv_transfer/kv_put_guard.h"
#include "kv_transfer/memory_descriptor.h"
#include "common/grpc/cluster_tls.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

struct DecodeServiceOptions {
  std::string worker_id;
  // The lease of a reservation: one neither renewed nor activated this long is freed.
  std::chrono::milliseconds reservation_timeout{30000};
  std::string transport_name = "ucx";
  // The put guard's owner table (decode_kv_plane.h): each reservation gets a
  // fresh put token, granted its blocks when Admit answers. Null: no tokens.
  std::shared_ptr<KvBlockOwners> put_owners;
  // Who may call: with mTLS, Admit/Decode/Release/Renew only a router's
  // certificate (they hand out KV destinations and tokens), Stats any
  // cluster certificate.
  std::shared_ptr<const ClusterTls> tls = ClusterTls::Insecure();
};

class DecodeService final : public v1::DecodeWorker::CallbackService {
 public:
  // `engine` must outlive the service. `regions` describe the engine's KV
  // pools as registered with the KV transport, one per TP rank in rank order
  // (every Admit hands all of them out with the reserved block ids).
  // `gate` (may be null: never refuses) must outlive the service.
  DecodeService(AsyncEngine* engine, std::vector<v1::KvRankRegion> regions, DecodeServiceOptions options,
                DrainGate* gate = nullptr);

  grpc::ServerUnaryReactor* Admit(grpc::CallbackServerContext* ctx, const v1::AdmitRequest* req,
                                  v1::AdmitResponse* resp) override;
  grpc::ServerWriteReactor<v1::DecodeResponse>* Decode(grpc::CallbackServerContext* ctx,
                                                       const v1::DecodeRequest* req) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx, const v1::ReleaseRequest* req,
                                    v1::ReleaseResponse* resp) override;
  grpc::ServerUnaryReactor* Renew(grpc::CallbackServerContext* ctx, const v1::RenewRequest* req,
                                  v1::RenewResponse* resp) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* ctx, const v1::StatsRequest* req,
                                  v1::WorkerStats* resp) override;

  // Set once at start, before the first RPC (the id may depend on the bound port).
  void set_worker_id(std::string id) { options_.worker_id = std::move(id); }

 private:
  AsyncEngine* const engine_;
  const std::vector<v1::KvRankRegion> regions_;
  DecodeServiceOptions options_;
  DrainGate* const gate_;
};

}  // namespace tandem
