// The pre-tokenizer's split regex: HuggingFace tokenizers run these patterns
// with Oniguruma (a backtracking engine); Tandem runs them with RE2, after a
// translation that keeps the match semantics of the patterns used by real
// vocabularies (GPT-2, Llama-3, Qwen2, SmolLM, DeepSeek):
//  - `\s` / `\S` become the Unicode White_Space class (RE2's are ASCII only),
//    `\d` becomes \p{Nd}, `\w` becomes [\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}].
//  - the negative lookahead alternative `\s+(?!\S)` (RE2 has no lookaround)
//    becomes the capturing group `(\s+)`. After a match in which that group
//    took part, if the match is longer than one character and is followed by
//    a non-whitespace character, its last character is given back and the
//    search goes on from there. With leftmost-first alternation this is
//    exactly what the backtracking engine does: `\s+` backs off one
//    character so that `(?!\S)` holds, and a single whitespace character in
//    front of a non-space falls through to the next alternative (`\s+`),
//    which matches the same single character.
//  - possessive quantifiers (`?+`, `*+`, `++`) become greedy ones; this is
//    exact for patterns whose possessive item cannot give anything back to
//    what follows (true of the patterns above).
//  - other groups become non-capturing.
// Any other lookaround, atomic group or backreference is an InvalidArgument.
//
// Thread-safety: immutable after Create(); FindMatches is safe to call
// concurrently (RE2 is thread-safe).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace re2 {
class RE2;
}

namespace tandem::tokenizer_internal {

// Translates an Oniguruma/Python-style pattern to RE2 syntax as described
// above. *has_lookahead_group is set when the `\s+(?!\S)` alternative was
// rewritten to capturing group 1.
absl::StatusOr<std::string> TranslatePattern(std::string_view pattern, bool* has_lookahead_group);

class SplitRegex {
 public:
  // Compiles `pattern` (tokenizer.json syntax). InvalidArgument names the
  // pattern when it uses an unsupported construct or does not compile.
  static absl::StatusOr<std::unique_ptr<SplitRegex>> Create(std::string_view pattern);
  // A pattern matching the literal `text` (Split's {"String": ...} form).
  static absl::StatusOr<std::unique_ptr<SplitRegex>> CreateLiteral(std::string_view text);
  ~SplitRegex();
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;

  // Appends the non-empty, non-overlapping matches in `text`, left to right,
  // as [begin, end) byte offsets.
  void FindMatches(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

 private:
  SplitRegex(std::unique_ptr<re2::RE2> re, bool has_lookahead_group);

  std::unique_ptr<re2::RE2> re_;
  bool has_lookahead_group_;
};

}  // namespace tandem::tokenizer_internal
