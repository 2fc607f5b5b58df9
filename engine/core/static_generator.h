// Runs a fixed set of requests to completion as one static batch: every
// prompt is prefilled in one step, then all live sequences decode together
// until each stops. KV blocks are laid out contiguously per sequence.
//
// This is the `static` rung of the batching ladder and the engine's simplest
// driver; the iteration-level scheduler (issue 3) replaces it as the default.
// Thread-safety: not thread-safe; one caller at a time.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/llama_model.h"
#include "engine/sampler/sampler.h"
#include "engine/sampler/sampling_params.h"

namespace tandem {

enum class FinishReason { kLength, kStop };

struct GenerationRequest {
  std::vector<int32_t> prompt_token_ids;
  SamplingParams sampling;
};

struct GenerationResult {
  std::vector<int32_t> token_ids;
  std::vector<SampledToken> samples;  // one per generated token (logprobs)
  FinishReason finish_reason = FinishReason::kLength;
};

struct StaticGeneratorOptions {
  int64_t block_size = 16;
  uint64_t fallback_seed = 0;  // seeds requests that carry none
};

// Generates for every request in `requests`. Errors: InvalidArgument for an
// empty prompt, invalid sampling params, or prompt + max_tokens past the
// model's max_position_embeddings (naming the request index).
absl::StatusOr<std::vector<GenerationResult>> GenerateStatic(
    LlamaModel& model, std::span<const GenerationRequest> requests,
    const StaticGeneratorOptions& options = {});

// "length" / "stop".
const char* FinishReasonName(FinishReason r);

}  // namespace tandem
