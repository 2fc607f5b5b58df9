// One token a sampler chose, with its log-probabilities: an API value type
// that the router and the workers pass around without the sampler itself.
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace tandem {

struct SampledToken {
  int32_t token_id = 0;
  float logprob = 0.0f;                                 // of the chosen token, in the model's own distribution
  std::vector<std::pair<int32_t, float>> top_logprobs;  // n best, highest first
};

}  // namespace tandem
