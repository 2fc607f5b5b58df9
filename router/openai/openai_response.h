// The OpenAI API's response bodies, written from Tandem's chunks: the
// completion and chat completion objects, their streamed chunks (SSE
// events), usage, both logprobs shapes, and the error object, in the field
// order OpenAI's own server writes them.
//
// Thread-safety: pure functions; the Tokenizer is only read.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/sampler/sampled_token.h"
#include "engine/tokenizer/tokenizer.h"
#include "router/generation_backend.h"
#include "router/openai/openai_request.h"

namespace tandem::openai {

enum class Endpoint { kCompletions, kChatCompletions };

// What every object of one response repeats.
struct ResponseHeader {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;     // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// One choice's part of a chunk or of the whole response.
struct ChoiceOutput {
  uint32_t index = 0;
  std::string text;
  std::vector<SampledToken> logprobs;  // one per token, when asked for
  ChunkFinish finish = ChunkFinish::kNone;
  bool role = false;  // chat streams: the first event, delta {"role": "assistant"}
};

struct UsageCounts {
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
};

// How logprobs are written: nullopt = "logprobs": null; else the top-n count.
struct LogprobsFormat {
  std::optional<uint32_t> top;
  const Tokenizer* tokenizer = nullptr;  // token strings; ids as "token_id:N" when null
};

// The non-streamed response object.
std::string ResponseBody(const ResponseHeader& h, const std::vector<ChoiceOutput>& choices, UsageCounts usage,
                         const LogprobsFormat& lp);
// One SSE event ("data: {...}\n\n") carrying one choice's delta. For
// completions `text_offset` is where this delta's text starts in the choice's
// text so far. `with_usage_null`: the chunk carries "usage": null (when the
// client asked for stream usage, every chunk has the member).
std::string ChunkEvent(const ResponseHeader& h, const ChoiceOutput& choice, const LogprobsFormat& lp,
                       size_t text_offset, bool with_usage_null);
// The last event of a stream with include_usage: no choices, the usage.
std::string UsageEvent(const ResponseHeader& h, UsageCounts usage);
inline constexpr std::string_view kDoneEvent = "data: [DONE]\n\n";

// The HTTP status a Tandem status answers with: 400 INVALID_ARGUMENT, 401
// UNAUTHENTICATED, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE,
// 504 DEADLINE_EXCEEDED, 499 CANCELLED, 500 otherwise.
int HttpStatus(absl::StatusCode code);
// {"error": {"message", "type", "param", "code"}}: `param` from the
// message's leading parameter name (ErrorParam), `type` OpenAI's for the
// status.
std::string ErrorBody(const absl::Status& status);
// The error as one SSE event, for a stream that already answered 200.
std::string ErrorEvent(const absl::Status& status);

}  // namespace tandem::openai
