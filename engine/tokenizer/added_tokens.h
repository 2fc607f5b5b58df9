// Added tokens (tokenizer.json `added_tokens`): strings that are matched in
// the input before anything else and become one id each, never split.
//
// Matching follows HuggingFace's AddedVocabulary:
//  - leftmost-longest, non-overlapping matches;
//  - tokens with normalized=false are matched in the raw text; tokens with
//    normalized=true are matched afterwards, in each normalized stretch
//    between raw matches, against their own normalized content (when the
//    tokenizer has no normalizer the two are the same);
//  - single_word: a match touching a word character (\p{L}, \p{N}, '_') on
//    either side is skipped;
//  - lstrip / rstrip: whitespace left / right of a match is absorbed into it.
// Special tokens are dropped by Decode(skip_special_tokens=true).
//
// Thread-safety: immutable after construction; Split is safe to call
// concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::tokenizer_internal {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A piece of text: either an added token (id >= 0) or plain text (id < 0).
struct TextSegment {
  size_t begin = 0;
  size_t end = 0;
  int32_t id = -1;
};

// Leftmost-longest matcher over one set of token strings.
class AddedTokenMatcher {
 public:
  // `tokens` are the candidates; `contents[i]` is what tokens[i] matches
  // (its content, or its normalized content). Empty contents are ignored.
  AddedTokenMatcher(const std::vector<AddedToken>& tokens, const std::vector<std::string>& contents);

  bool empty() const { return num_candidates_ == 0; }

  // Cuts `text` into plain segments and token segments, in order; plain
  // segments may be empty only when the text is.
  std::vector<TextSegment> Split(std::string_view text) const;

 private:
  struct Candidate {
    std::string content;
    int32_t id;
    bool lstrip, rstrip, single_word;
  };
  // Candidates by first byte, longest first.
  std::vector<Candidate> by_first_byte_[256];
  size_t num_candidates_ = 0;
};

}  // namespace tandem::tokenizer_internal
