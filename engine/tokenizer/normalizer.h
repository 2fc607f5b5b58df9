// Normalizers: the `normalizer` section of tokenizer.json, applied to each
// stretch of input text between added tokens before pre-tokenization.
// Supported types: Sequence, Prepend, Replace (String or Regex pattern, the
// regex on Oniguruma as in split_regex.h), Strip, and NFC, NFD, NFKC, NFKD
// (ICU). Anything else (Lowercase, BertNormalizer, ...) is an InvalidArgument
// naming the type.
//
// Thread-safety: immutable after parsing; Normalize is safe to call
// concurrently.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace tandem::tokenizer_internal {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites *text in place. Fails only where a Replace regex hits its
  // limits (ResourceExhausted, see split_regex.h); *text is then unspecified.
  virtual absl::Status Normalize(std::string* text) const = 0;
};

// Builds the normalizer of a tokenizer.json `normalizer` value; nullptr for
// JSON null.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& config);

}  // namespace tandem::tokenizer_internal
