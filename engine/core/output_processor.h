// OutputProcessor: the text side of generation. Per request it keeps an
// IncrementalDecoder (never half a UTF-8 character) and a StopStringMatcher;
// after each engine step it turns new token ids into text deltas and, when a
// stop string completes, ends the request in the engine before the next step
// (so no token is generated past the stop).
// Thread-safety: used from the engine loop only; not thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/core/llm_engine.h"
#include "engine/tokenizer/stop_strings.h"
#include "engine/tokenizer/tokenizer.h"

namespace tandem {

// One request's progress as the client sees it.
struct TextOutput {
  std::string request_id;
  std::vector<int32_t> new_token_ids;
  std::vector<SampledToken> new_samples;
  std::string new_text;  // safe to show: complete characters, no stop string
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
};

class OutputProcessor {
 public:
  // `tokenizer` may be null (then no text and no stop strings); it must
  // outlive the processor.
  explicit OutputProcessor(const Tokenizer* tokenizer) : tokenizer_(tokenizer) {}

  // Starts tracking a request. Stop strings need a tokenizer.
  void Add(const std::string& request_id, std::span<const int32_t> prompt_ids,
           std::vector<std::string> stop_strings);

  // Converts one step's outputs; requests that hit a stop string are finished
  // in `engine` (reason kStop). Finished requests are forgotten.
  std::vector<TextOutput> Process(LlmEngine& engine, const std::vector<RequestOutput>& outputs);

  // Forgets a request (after an abort).
  void Remove(const std::string& request_id) { streams_.erase(request_id); }

 private:
  struct Stream {
    std::unique_ptr<IncrementalDecoder> decoder;
    StopStringMatcher stops;
  };
  const Tokenizer* const tokenizer_;
  absl::flat_hash_map<std::string, Stream> streams_;
};

}  // namespace tandem
