// The public gRPC service tandem.v1.Generation: validates each request,
// hands it to a GenerationBackend, and streams the backend's chunks to the
// client, one write at a time. A client that closes the stream or passes its
// deadline cancels the request in the backend.
// Thread-safety: gRPC calls it from its callback threads; it never blocks them.
#pragma once

#include <atomic>
#include <memory>

#include "router/generation_backend.h"
#include "router/request_metrics.h"
#include "router/request_validator.h"
#include "tandem/v1/generation.grpc.pb.h"

namespace tandem {

class GenerationService final : public v1::Generation::CallbackService {
 public:
  // `backend` and `metrics` (may be null: no metrics) must outlive the service.
  GenerationService(RequestValidator validator, GenerationBackend* backend, RequestMetrics* metrics = nullptr)
      : validator_(std::move(validator)), backend_(backend), metrics_(metrics) {}

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(grpc::CallbackServerContext* context,
                                                           const v1::GenerateRequest* request) override;

 private:
  const RequestValidator validator_;
  GenerationBackend* const backend_;
  RequestMetrics* const metrics_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace tandem
