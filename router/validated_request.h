// A public request after validation: every field checked, defaults resolved,
// the prompt tokenized. Core code works on this, never on the proto (STYLE 7).
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/sampler/sampling_params.h"

namespace tandem {

struct ValidatedRequest {
  std::string request_id;
  std::vector<int32_t> prompt_token_ids;
  SamplingParams sampling;         // defaults resolved; seed may be unset
  std::vector<std::string> stop;   // stop strings (text level)
  int32_t priority = 0;
};

}  // namespace tandem
