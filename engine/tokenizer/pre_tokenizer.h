// Pre-tokenizers: cut normalized text into the words that BPE runs on, as the
// `pre_tokenizer` section of tokenizer.json describes. Supported types:
// Split (Regex or String pattern, every behavior, invert), ByteLevel
// (add_prefix_space, use_regex with GPT-2's pattern), Digits, Metaspace
// (replacement, prepend_scheme or legacy add_prefix_space, split),
// Punctuation, WhitespaceSplit, Whitespace and Sequence of these. Regexes run
// on Oniguruma, with limits (see split_regex.h).
// Each step applies to every piece the previous steps produced, as in
// HuggingFace tokenizers (so ByteLevel's add_prefix_space prefixes every
// piece that does not start with a space).
//
// Thread-safety: immutable after parsing; Apply is safe to call concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace tandem::tokenizer_internal {

struct PreToken {
  std::string text;
  // True when the piece starts at offset 0 of the original input (what
  // Metaspace's prepend_scheme "first" tests).
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces *pieces by their sub-pieces (empty pieces are dropped). Fails
  // only where a split regex hits its limits (ResourceExhausted, see
  // split_regex.h); *pieces is then unspecified.
  virtual absl::Status Apply(std::vector<PreToken>* pieces) const = 0;
};

// Builds the pre-tokenizer of a tokenizer.json `pre_tokenizer` value. Returns
// nullptr for JSON null. InvalidArgument names an unsupported type or option.
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& config);

}  // namespace tandem::tokenizer_internal
