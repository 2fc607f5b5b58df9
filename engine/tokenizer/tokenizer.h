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
// post_processor template in tokenizer.json. Regexes run on Oniguruma, the
// library HuggingFace tokenizers uses, with limits (split_regex.h).
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
  // Token ids (vocabulary and added tokens) must lie in [0, kMaxVocabSize):
  // far above any real vocabulary (~256k), low enough that the id -> token
  // table a file's largest id sizes stays small (a hostile file cannot ask
  // for gigabytes with one number).
  static constexpr int32_t kMaxVocabSize = 1 << 22;

  virtual ~Tokenizer() = default;

  // Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json`
  // (`dir` may also be the path of a tokenizer.json file). Supported:
  // model BPE (vocab, "a b" or ["a","b"] merges, byte_fallback, unk_token,
  // fuse_unk, ignore_merges); normalizers Sequence, Prepend, Replace, Strip,
  // NFC/NFD/NFKC/NFKD (with ICU); pre-tokenizers Sequence, Split, ByteLevel,
  // Digits, Metaspace, Punctuation, Whitespace, WhitespaceSplit; decoders
  // Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace.
  // Errors name the file and what is wrong (missing file, bad JSON,
  // unsupported model/pre-tokenizer type, malformed merges).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::filesystem::path& dir);

  // Load() from memory: `tokenizer_json` is the text of tokenizer.json and
  // `tokenizer_config_json` that of tokenizer_config.json (nullopt when there
  // is none). `json_path` only names the source in error messages (the
  // config's name is its sibling tokenizer_config.json). Same errors as Load.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFromJson(
      std::string_view tokenizer_json, std::optional<std::string_view> tokenizer_config_json,
      const std::filesystem::path& json_path = "tokenizer.json");

  // Token ids of `text`. With add_special_tokens, the BOS id is prepended when
  // the tokenizer's configuration asks for it. Special-token strings inside
  // `text` are recognised as their ids. Fails only where a normalizer or
  // pre-tokenizer regex hits its backtracking or stack limit
  // (ResourceExhausted; see engine/tokenizer/split_regex.h), which takes
  // hostile input such as a run of over a million characters of one class.
  // Use this for text from users.
  virtual absl::StatusOr<std::vector<int32_t>> TryEncode(std::string_view text,
                                                         bool add_special_tokens = true) const = 0;

  // TryEncode's ids, or an empty vector where TryEncode fails. For text the
  // caller controls (tools, tests).
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens = true) const {
    absl::StatusOr<std::vector<int32_t>> ids = TryEncode(text, add_special_tokens);
    return ids.ok() ? *std::move(ids) : std::vector<int32_t>();
  }

  // Text of `ids`. Invalid UTF-8 produced by byte tokens is replaced by U+FFFD
  // (one per maximal invalid sequence, as Python's errors="replace").
  // Ids outside the vocabulary decode to nothing. SentencePiece-style
  // decoders drop the single leading space that the encoder's prepended "▁"
  // stands for.
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens = true) const = 0;

  // Text that `ids` add when they follow earlier, non-empty text: Decode()
  // without the steps that act only at the start of a text (SentencePiece's
  // leading-space strip). For ids that start and end on character
  // boundaries, Decode(a + b) == Decode(a) + DecodeContinuation(b) whenever
  // Decode(a) is non-empty. Used by IncrementalDecoder.
  virtual std::string DecodeContinuation(std::span<const int32_t> ids, bool skip_special_tokens = true) const {
    return Decode(ids, skip_special_tokens);
  }

  virtual int32_t vocab_size() const = 0;  // including added tokens
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  // The vocabulary string of `id` ("" when out of range).
  virtual std::string IdToToken(int32_t id) const = 0;
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
};

// Turns a stream of generated token ids into text pieces, in the manner of
// HuggingFace / vLLM's detokenize_incrementally: it decodes a short window of
// ids (from prefix_offset_) with and without the newest ones and emits the
// difference, holding it back while the window's text ends in U+FFFD (an
// incomplete UTF-8 character or byte-fallback run). Consequences:
//  1. Every returned piece is valid UTF-8; no character is ever split.
//  2. For prompt P and generated ids G, the concatenation of all Add(g) for
//     g in G followed by Flush() equals Decode(P + G) with its prefix
//     Decode(P) removed, provided Decode(P) is a prefix of Decode(P + G) —
//     always, unless P ends inside a UTF-8 character that G completes (then
//     the completed character is emitted in full). In particular a
//     SentencePiece token "▁word" generated after a non-empty prompt yields
//     " word", and after an empty prompt "word" (as Decode strips it).
//  3. Text ending in a genuine U+FFFD is held until the next Add or Flush.
// Thread-safety: one decoder serves one stream; not thread-safe.
class IncrementalDecoder {
 public:
  // `tokenizer` must outlive the decoder. `prompt_ids` (may be empty) gives
  // context so the first generated token decodes as it would after the prompt.
  IncrementalDecoder(const Tokenizer& tokenizer, std::span<const int32_t> prompt_ids, bool skip_special_tokens = true);

  // Appends `id`; returns the text that became final (possibly empty).
  std::string Add(int32_t id);
  // Returns whatever is still held (incomplete bytes become U+FFFD).
  std::string Flush();

 private:
  // Text of ids_[begin..end): Decode() while no text precedes the window's
  // new ids (has_text_ false), else DecodeContinuation().
  std::string DecodeWindow(size_t begin, size_t end) const;
  // Emits the text of ids_[prefix_offset_..) beyond prefix_text_ and moves
  // the window forward; `hold_incomplete` keeps text ending in U+FFFD back.
  std::string Advance(bool hold_incomplete);

  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // ids_[prefix_offset_..read_offset_) give context
  size_t read_offset_ = 0;    // ids_[read_offset_..) are not yet emitted
  bool has_text_ = false;     // ids_[0..read_offset_) decode to non-empty raw text
  std::string prefix_text_;   // DecodeWindow(prefix_offset_, read_offset_)
};

}  // namespace tandem
