// The seam between the public Generation service and whatever produces the
// tokens: the colocated engine (tandem serve) or the disaggregated cluster
// (prefill and decode workers). The service knows only this interface.
// Thread-safety: implementations must make Start() and Cancel() thread-safe;
// sinks may be called from any thread and must not block.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampler/sampled_token.h"
#include "router/validated_request.h"

namespace tandem {

enum class ChunkFinish { kNone, kLength, kStop };

// One piece of a request's stream.
struct GenerationChunk {
  std::string text;                    // complete characters, stop strings removed
  std::vector<int32_t> token_ids;
  std::vector<SampledToken> logprobs;  // one per token when logprobs were asked for
  ChunkFinish finish = ChunkFinish::kNone;
};

class GenerationBackend {
 public:
  // Receives the stream: chunks until one has finish != kNone, or a non-OK
  // status (which ends the stream).
  using Sink = std::function<void(const absl::Status&, GenerationChunk)>;

  virtual ~GenerationBackend() = default;
  // Starts `request` under `id` (unique among running requests).
  virtual void Start(const std::string& id, ValidatedRequest request, Sink sink) = 0;
  // The client is gone: stop and release everything `id` holds. The sink
  // may still be called once more; the caller ignores it.
  virtual void Cancel(const std::string& id) = 0;
};

}  // namespace tandem
