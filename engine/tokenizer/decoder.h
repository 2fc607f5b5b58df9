// Decoders: the `decoder` section of tokenizer.json, turning token strings
// back into text. Supported types: ByteLevel, Replace (String or Regex),
// ByteFallback, Fuse, Strip, Metaspace and Sequence of these; JSON null joins
// the tokens with spaces (as HuggingFace does without a decoder).
//
// Two deliberate differences from HuggingFace, both only for invalid UTF-8:
// ByteFallback keeps a run of <0xXX> tokens as raw bytes, and the final text
// replaces each maximal invalid byte sequence by one U+FFFD (HuggingFace's
// ByteFallback turns every byte of an invalid run into U+FFFD). This makes
// decoding prefix-stable, which IncrementalDecoder relies on.
//
// A Replace regex (Oniguruma, see split_regex.h) that hits its limits on a
// token leaves that token unchanged: decoding has no error path, and what it
// reads is the model's vocabulary and output, where that takes a run of over
// a million characters of one class.
//
// Continuation mode decodes tokens that follow earlier text: steps that only
// act at the start of a text (Strip's leading cut after the tokens were fused,
// Metaspace's removal of the first token's prefix space) are skipped.
//
// Thread-safety: immutable after parsing; Decode is safe to call
// concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace tandem::tokenizer_internal {

// What the steps share while decoding one list of tokens.
struct DecodeContext {
  bool continuation = false;  // the tokens follow earlier text
  bool fused = false;         // an earlier step joined all tokens into one
};

class DecoderStep {
 public:
  virtual ~DecoderStep() = default;
  // Rewrites the token strings (which may hold raw bytes) in place.
  virtual void Apply(std::vector<std::string>* tokens, DecodeContext* context) const = 0;
};

class Decoder {
 public:
  // Parses a tokenizer.json `decoder` value (null allowed).
  static absl::StatusOr<std::unique_ptr<Decoder>> FromJson(const nlohmann::json& config);

  // Joins the decoded tokens into valid UTF-8 text.
  std::string Decode(std::vector<std::string> tokens, bool continuation) const;

 private:
  explicit Decoder(std::unique_ptr<DecoderStep> step) : step_(std::move(step)) {}
  std::unique_ptr<DecoderStep> step_;  // null: join with " "
};

}  // namespace tandem::tokenizer_internal
