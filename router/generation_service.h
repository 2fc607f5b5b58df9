// The public gRPC service tandem.v1.Generation: validates each request,
// hands it to a GenerationBackend, and streams the backend's chunks to the
// client, one write at a time. A client that closes the stream or passes its
// deadline cancels the request in the backend. With a DrainGate, each
// stream holds a ticket until it is done, and once the gate drains new
// calls get UNAVAILABLE (the process is shutting down). With ApiKeyAuth,
// a call must carry `authorization: Bearer KEY` (else UNAUTHENTICATED, before
// anything else is looked at) and fit its key's limits (else
// RESOURCE_EXHAUSTED with grpc-retry-pushback-ms); health and reflection stay
// open, as probes need them.
// Thread-safety: gRPC calls it from its callback threads; it never blocks them.
#pragma once

#include <atomic>
#include <memory>

#include "common/drain_gate.h"
#include "router/api_keys.h"
#include "router/generation_backend.h"
#include "router/request_metrics.h"
#include "router/request_validator.h"
#include "tandem/v1/generation.grpc.pb.h"

namespace tandem {

class GenerationService final : public v1::Generation::CallbackService {
 public:
  // `backend`, `metrics` (may be null: no metrics), `gate` (may be null:
  // never refuses) and `auth` (may be null: no keys needed) must outlive the
  // service.
  GenerationService(RequestValidator validator, GenerationBackend* backend, RequestMetrics* metrics = nullptr,
                    DrainGate* gate = nullptr, const ApiKeyAuth* auth = nullptr)
      : validator_(std::move(validator)),
        backend_(backend),
        metrics_(metrics),
        gate_(gate),
        auth_(auth),
        instance_(NewInstanceTag()) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                           const v1::GenerateRequest* request) override;

  // A random tag for backend ids (64 bits, hex); the HTTP API uses its own.
  static std::string NewInstanceTag();

 private:
  const RequestValidator validator_;
  GenerationBackend* const backend_;
  RequestMetrics* const metrics_;
  DrainGate* const gate_;
  const ApiKeyAuth* const auth_;
  // Backend ids are "<client id>#<instance>-<n>": unique per process (n) and
  // across router replicas sharing workers (a random instance tag), so two
  // routers never hand a worker the same request id.
  const std::string instance_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace tandem
