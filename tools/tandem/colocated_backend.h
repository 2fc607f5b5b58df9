// The colocated GenerationBackend: router, prefill and decode in one process
// over one AsyncEngine, with no KV transfer at all. The embedded default of
// `tandem serve` and the baseline disaggregation must beat (docs/architecture.md, invariant 8).
// Thread-safety: Start() and Cancel() are thread-safe (AsyncEngine queues).
#pragma once

#include "engine/core/async_engine.h"
#include "router/generation_backend.h"

namespace tandem {

class ColocatedBackend final : public GenerationBackend {
 public:
  // `engine` must outlive the backend.
  explicit ColocatedBackend(AsyncEngine* engine) : engine_(engine) {}

  void Start(const std::string& id, ValidatedRequest request, Sink sink) override;
  void Cancel(const std::string& id) override { engine_->Cancel(id); }

 private:
  AsyncEngine* const engine_;
};

}  // namespace tandem
