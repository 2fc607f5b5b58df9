// The decode worker's reading of its wire requests: an AdmitRequest becomes
// the EngineRequest that LlmEngine::ReserveExternal validates (ids inside
// the vocabulary, sampling in range, context and pool limits), and a
// DecodeRequest's first token is what ActivateExternal checks. Kept apart
// from the gRPC service so it can be tested (and fuzzed, fuzz/) without one.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

#include "engine/core/llm_engine.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// Every field copied; nothing is checked here (the engine validates). The
// reservation reuses whatever prefix of the context the worker's prefix
// cache holds (KvDestination.num_cached_blocks tells the prefill worker).
// Ids above INT32_MAX become negative, which the engine refuses.
EngineRequest EngineRequestFromAdmit(const v1::AdmitRequest& request);

// The first token of a DecodeRequest, as ActivateExternal takes it (ids
// above INT32_MAX become negative, which it refuses).
int32_t FirstTokenOf(const v1::DecodeRequest& request);

}  // namespace tandem
