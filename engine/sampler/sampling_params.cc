#include "engine/sampler/sampling_params.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status SamplingParams::Validate() const {
  auto bad = [](const char* field, auto value, const char* rule) {
    return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, ": ", rule));
  };
  if (!std::isfinite(temperature) || temperature < 0.0f) return bad("temperature", temperature, "must be >= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return bad("top_p", top_p, "must be in (0, 1]");
  if (top_k < -1) return bad("top_k", top_k, "must be -1, 0 (off) or positive");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return bad("min_p", min_p, "must be in [0, 1]");
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return bad("repetition_penalty", repetition_penalty, "must be > 0");
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return bad("frequency_penalty", frequency_penalty, "must be in [-2, 2]");
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return bad("presence_penalty", presence_penalty, "must be in [-2, 2]");
  }
  if (max_tokens < 1) return bad("max_tokens", max_tokens, "must be >= 1");
  if (logprobs > 20) return bad("logprobs", logprobs, "must be <= 20");
  return absl::OkStatus();
}

}  // namespace tandem
