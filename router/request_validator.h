// Turns a tandem.v1.GenerateRequest into a ValidatedRequest before any work
// is done, or an INVALID_ARGUMENT status whose message names the field
// (`sampling.top_p`, `prompt_token_ids[3]`, ...).
//
// Checks: a prompt is given (text or ids); ids are inside the vocabulary;
// every sampling value is in range; stop strings are few and non-empty;
// prompt + max_tokens fits the model's context; no unknown fields (a client
// built against a newer API must not have its intent silently dropped).
// Thread-safety: immutable after construction; Validate() is thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "router/validated_request.h"

namespace tandem::v1 {
class GenerateRequest;
}

namespace tandem {

class RequestValidator {
 public:
  static constexpr int kMaxStopStrings = 16;
  static constexpr uint32_t kDefaultMaxTokens = 16;

  // `tokenizer` may be null (then only prompt_token_ids are accepted); it
  // must outlive the validator.
  RequestValidator(const ModelConfig& config, const Tokenizer* tokenizer)
      : config_(config), tokenizer_(tokenizer) {}

  // `fallback_id` names the request when the client gave no request_id.
  absl::StatusOr<ValidatedRequest> Validate(const v1::GenerateRequest& request,
                                            const std::string& fallback_id) const;

 private:
  const ModelConfig config_;
  const Tokenizer* const tokenizer_;
};

}  // namespace tandem
