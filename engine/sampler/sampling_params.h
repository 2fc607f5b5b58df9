// Per-request sampling parameters, as the user gave them, and their checks.
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"

namespace tandem {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy
  float top_p = 1.0f;               // (0, 1]; 1 = off
  int32_t top_k = 0;                // 0 or -1 = off
  float min_p = 0.0f;               // [0, 1]; 0 = off
  float repetition_penalty = 1.0f;  // > 0; 1 = off (HF: divides positive logits)
  float frequency_penalty = 0.0f;   // [-2, 2]; subtracts count * penalty
  float presence_penalty = 0.0f;    // [-2, 2]; subtracts penalty once present
  std::optional<uint64_t> seed;     // unset = from the engine's entropy
  uint32_t max_tokens = 16;         // >= 1
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  uint32_t logprobs = 0;            // top-n logprobs to return besides the chosen one

  bool greedy() const { return temperature == 0.0f; }

  // InvalidArgument naming the first out-of-range field.
  absl::Status Validate() const;
};

}  // namespace tandem
