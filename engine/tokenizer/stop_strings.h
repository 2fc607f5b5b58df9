// Stop strings matched on detokenized text, across token boundaries.
//
// Text arrives in pieces (from an IncrementalDecoder, so never half a UTF-8
// character). The matcher emits text as soon as it cannot be the start of a
// stop string, holds back the shortest tail that still could be, and when a
// stop string appears emits only the text before it: the stop string itself
// and everything after it are never returned (vLLM's and OpenAI's behaviour).
// Thread-safety: one matcher per sequence; not thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tandem {

class StopStringMatcher {
 public:
  // `stops` must not contain empty strings (SamplingParams validation rejects them).
  explicit StopStringMatcher(std::vector<std::string> stops);

  // Appends `piece`; returns the text that became safe to emit (possibly empty).
  // After a stop string has been seen, returns "" and ignores further input.
  std::string Feed(std::string_view piece);

  // Returns whatever is held back (call at the end when no stop string hit).
  std::string Flush();

  bool stopped() const { return stopped_; }
  // The stop string that matched ("" when none).
  const std::string& matched() const { return matched_; }

 private:
  // Length of the longest suffix of pending_ that is a proper prefix of a stop string.
  size_t HeldBackLength() const;

  std::vector<std::string> stops_;
  std::string pending_;  // text not yet emitted
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace tandem
