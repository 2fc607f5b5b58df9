// HfTokenizer: the Tokenizer implementation for HuggingFace tokenizer.json
// files, assembled from the parsed sections (see tokenizer_json.cc for the
// loading). Encoding runs, for each input:
//   1. added tokens with normalized=false are cut out of the raw text;
//   2. each stretch between them is normalized, then added tokens with
//      normalized=true are cut out of it;
//   3. each remaining stretch is pre-tokenized into words;
//   4. each word goes through the BPE model;
//   5. BOS / EOS are added as configured.
// Decoding maps ids to token strings (dropping special tokens if asked) and
// runs the decoder.
//
// Thread-safety: immutable after construction; every method is const and
// safe to call concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/bpe.h"
#include "engine/tokenizer/decoder.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"

namespace tandem::tokenizer_internal {

// Everything a tokenizer is made of; filled by the loader.
struct TokenizerParts {
  std::unique_ptr<Normalizer> normalizer;       // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // may be null: one word per stretch
  std::unique_ptr<BpeModel> model;              // never null
  std::unique_ptr<Decoder> decoder;             // never null
  std::vector<AddedToken> added_tokens;
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  bool add_bos = false;  // Encode(add_special_tokens) prepends bos_id
  bool add_eos = false;  // Encode(add_special_tokens) appends eos_id
};

class HfTokenizer final : public Tokenizer {
 public:
  explicit HfTokenizer(TokenizerParts parts);

  absl::StatusOr<std::vector<int32_t>> TryEncode(std::string_view text, bool add_special_tokens = true) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens = true) const override;
  std::string DecodeContinuation(std::span<const int32_t> ids, bool skip_special_tokens = true) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  std::optional<int32_t> bos_id() const override { return parts_.bos_id; }
  std::optional<int32_t> eos_id() const override { return parts_.eos_id; }
  bool IsSpecial(int32_t id) const override;
  std::string IdToToken(int32_t id) const override;
  std::optional<int32_t> TokenToId(std::string_view token) const override;

 private:
  // Steps 2-4 of the header comment for one stretch between raw matches.
  absl::Status EncodeStretch(std::string text, bool at_start, std::vector<int32_t>* ids) const;
  std::string DecodeImpl(std::span<const int32_t> ids, bool skip_special_tokens, bool continuation) const;

  TokenizerParts parts_;
  AddedTokenMatcher raw_matcher_;                        // added tokens with normalized=false
  AddedTokenMatcher normalized_matcher_;                 // added tokens with normalized=true
  std::vector<std::string> id_to_token_;                 // [vocab_size]
  std::vector<bool> is_special_;                         // [vocab_size]
  absl::flat_hash_map<std::string, int32_t> added_ids_;  // content -> id
};

}  // namespace tandem::tokenizer_internal
