// The tokenizer's regexes (Split / ByteLevel pre-tokenizer patterns, Replace
// normalizer and decoder patterns) on Oniguruma (libonig).
//
// Why Oniguruma rather than PCRE2: it is the library HuggingFace tokenizers
// itself runs these patterns with (through the Rust `onig` crate, in
// Oniguruma's default syntax, as here), so a pattern from tokenizer.json
// compiles verbatim and matches exactly as it does in HF: lookahead such as
// GPT-2's `\s+(?!\S)`, possessive quantifiers, and Oniguruma's own meanings of
// `\s` (Unicode White_Space), `\w` (letters, marks, decimal digits, connector
// punctuation), `\d`, `\h`, case folding and POSIX brackets. PCRE2 with
// PCRE2_UCP differs on some of these (its `\w` lacks marks, its `\s` takes
// U+180E), so it would need a translation layer again, which is what this
// replaced. PCRE2's JIT splits about 3x faster, but the split is about a third
// of Encode's time on English text (BPE is the rest), and Oniguruma already
// made Encode 3x to 4x faster than the RE2 emulation did.
//
// Limits: the router runs these on user text, and a backtracking engine can
// take long or use much memory on hostile input. Every search runs with
//  - a retry limit (backtracking steps, within one match attempt and over all
//    start positions of one search), which bounds the time of a search, and
//  - a match-stack limit, which bounds its memory: a greedy item may keep one
//    stack entry (32 bytes) per character it has taken (none where Oniguruma
//    sees it never has to give any back), so the limit is also the longest
//    run such an item can match (a million characters of whitespace, of
//    letters, ...).
// A search that hits a limit makes FindMatches fail with ResourceExhausted;
// it never returns a partial or different split. The patterns real
// vocabularies use (GPT-2, Llama-3, Qwen2, o200k) take a few steps per
// character matched, so their work is linear in the text, and text of any
// length stays within the limits unless one character class runs for over a
// million characters (bench/kernels/tokenizer_bench.cc measures such runs).
//
// Invalid UTF-8 (possible only through the C++ API; HF takes Rust strings):
// each maximal ill-formed subpart is matched as if it were U+FFFD, and spans
// are reported in the caller's byte offsets, so a byte-level split of such
// text still covers every byte.
//
// Thread-safety: immutable after Create(); FindMatches and ReplaceAll are safe
// to call concurrently (Oniguruma searches do not modify the compiled regex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct re_pattern_buffer;  // Oniguruma's compiled regex (OnigRegexType)

namespace tandem::tokenizer_internal {

class SplitRegex {
 public:
  struct Limits {
    // Backtracking steps one search may take (Oniguruma's retry limit in
    // match and in search): on the order of 0.1 s of CPU.
    uint64_t retry_limit = 10'000'000;
    // Entries of the backtracking stack of one search (32 bytes each).
    uint32_t stack_limit = 1u << 20;
  };

  // Compiles `pattern` (tokenizer.json syntax, i.e. Oniguruma's). An
  // InvalidArgument names the pattern and Oniguruma's message when it does
  // not compile.
  static absl::StatusOr<std::unique_ptr<SplitRegex>> Create(std::string_view pattern);
  static absl::StatusOr<std::unique_ptr<SplitRegex>> Create(std::string_view pattern, const Limits& limits);
  // Matches the literal `text` (Split's {"String": ...} form); found with a
  // plain substring search, so no limits apply.
  static absl::StatusOr<std::unique_ptr<SplitRegex>> CreateLiteral(std::string_view text);
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  // Appends the non-empty, non-overlapping matches in `text`, left to right,
  // as [begin, end) byte offsets (an empty match is stepped over by one
  // character). ResourceExhausted when a search hits a limit (then *matches
  // is left as it was); Internal for any other Oniguruma error.
  absl::Status FindMatches(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

  // `text` with every non-empty match replaced by `replacement`, taken
  // literally (no group references), as HF's Replace does. Errors as
  // FindMatches.
  absl::StatusOr<std::string> ReplaceAll(std::string_view text, std::string_view replacement) const;

  // The pattern as given to Create / CreateLiteral.
  const std::string& pattern() const { return pattern_; }

 private:
  struct RegexDeleter {
    void operator()(re_pattern_buffer* regex) const;
  };

  SplitRegex(std::string pattern, std::unique_ptr<re_pattern_buffer, RegexDeleter> regex, const Limits& limits);
  // FindMatches on well-formed UTF-8.
  absl::Status FindMatchesValid(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

  std::string pattern_;
  std::unique_ptr<re_pattern_buffer, RegexDeleter> regex_;  // null for a literal
  Limits limits_;
};

}  // namespace tandem::tokenizer_internal
