// Text <-> token ids for HuggingFace `tokenizer.json` vocabularies.
//
// Two families are supported, chosen from the file's contents:
//  - byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM): a Split pre-tokenizer regex
//    (or ByteLevel's built-in GPT-2 regex) cuts the text, bytes map to the
//    printable byte alphabet, BPE merges by rank.
//  - SentencePiece-style BPE (Llama-2, TinyLlama, Mistral): spaces become the
//    metaspace "▁" (with a prefix space as configured), BPE merges by rank,
//    unknown characters fall back to <0xXX> byte tokens.
// Added tokens (special or not) are matched first and never split.
// BOS handling follows `tokenizer_config.json` (`add_bos_token`) or the
// post_processor template in tokenizer.json.
//
// Thread-safety: immutable after Load(); Encode/Decode are safe to call
// concurrently. An IncrementalDecoder is for one stream (not thread-safe).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`.
  // Errors name the file and what is wrong (missing file, bad JSON,
  // unsupported model/pre-tokenizer type, malformed merges).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::filesystem::path& dir);

  // Token ids of `text`. With add_special_tokens, the BOS id is prepended when
  // the tokenizer's configuration asks for it. Special-token strings inside
  // `text` are recognised as their ids.
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens = true) const = 0;

  // Text of `ids`. Invalid UTF-8 produced by byte tokens is replaced by U+FFFD.
  // Ids outside the vocabulary decode to nothing.
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens = true) const = 0;

  virtual int32_t vocab_size() const = 0;  // including added tokens
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  // The vocabulary string of `id` ("" when out of range).
  virtual std::string IdToToken(int32_t id) const = 0;
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
};

// Turns a stream of token ids into text pieces, never emitting part of a UTF-8
// character: bytes of an incomplete character are held until it completes.
// Handles SentencePiece's leading-space stripping consistently with Decode():
// the concatenation of every Add() plus Flush() equals Decode(all ids).
class IncrementalDecoder {
 public:
  // `tokenizer` must outlive the decoder. `prompt_ids` (may be empty) gives
  // context so the first generated token decodes as it would after the prompt.
  IncrementalDecoder(const Tokenizer& tokenizer, std::span<const int32_t> prompt_ids,
                     bool skip_special_tokens = true);

  // Appends `id`; returns the text that became final (possibly empty).
  std::string Add(int32_t id);
  // Returns whatever is still held (incomplete bytes become U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // ids_[prefix_offset_..read_offset_) give context
  size_t read_offset_ = 0;    // ids_[read_offset_..) are not yet emitted
};

}  // namespace tandem
