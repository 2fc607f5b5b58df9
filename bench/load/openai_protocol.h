// The OpenAI completions protocol as tandem-bench speaks it, without any
// networking: the request body, the Server-Sent Events framing of a streamed
// response, the meaning of each event, and HTTP errors as statuses. The HTTP
// transfer itself is in openai_call.{h,cc}.
//
// A streamed completion is a sequence of SSE events `data: {json}` ending with
// `data: [DONE]`. An event with a non-empty `choices` array is one token
// arrival (its text may be empty: a token can decode to nothing on its own);
// the last event before [DONE] may carry only `usage` (stream_options
// include_usage). `usage.completion_tokens`, when sent, is the output length;
// otherwise the number of choice events is.
// Thread-safety: plain structs and functions; an SseParser or StreamState
// belongs to one stream and is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "bench/load/dataset.h"
#include "bench/load/request_metrics.h"

namespace tandem::bench {

struct CompletionOptions {
  std::string model;
  bool ignore_eos = false;
  float temperature = 0;  // --temperature, else 0 (greedy)
};

// {"model", "prompt": [ids], "max_tokens", "stream": true,
//  "stream_options": {"include_usage": true}, "temperature"[, "ignore_eos": true]}
std::string CompletionRequestBody(const BenchRequest& request, const CompletionOptions& options);

// One SSE event: its `data:` lines joined by '\n', or, when it has `error:`
// lines (llama-server reports a failed stream as `error: {json}`), those.
struct SseEvent {
  std::string data;
  bool is_error = false;
};

// Splits a byte stream into SSE events and hands each to the callback. Lines
// end in \n, \r\n or \r; comments (':') and other fields are skipped; an
// event without data or error lines is not reported. Memory is bounded by the
// longest line plus one event's data.
class SseParser {
 public:
  void Feed(std::string_view bytes, const std::function<void(const SseEvent&)>& on_event);

 private:
  void Line(std::string_view line, const std::function<void(const SseEvent&)>& on_event);

  std::string line_;  // the incomplete last line
  SseEvent data_, error_;
  bool has_data_ = false, has_error_ = false;
  bool skip_lf_ = false;  // the previous line ended in \r: a following \n is part of it
};

// What the events of one stream have said so far.
struct StreamState {
  int64_t choice_events = 0;
  std::optional<int64_t> usage_prompt_tokens;
  std::optional<int64_t> usage_completion_tokens;
  std::string finish_reason;  // the last non-null one
  bool done = false;          // [DONE] seen
  absl::Status error;         // an error event or an unreadable one
};

enum class EventKind { kChoice, kOther, kDone, kError };

// Interprets one event. kChoice: stamp it as a token arrival. An error event
// (an `error:` field, or data holding an "error" object) sets state->error:
// its code from the error's HTTP-like "code" (as HttpErrorStatus; Internal
// when absent), its message "error event: MESSAGE".
EventKind ApplyEvent(const SseEvent& event, StreamState* state);

// A non-200 response as a status: the code from the HTTP status (400
// InvalidArgument, 401 Unauthenticated, 403 PermissionDenied, 404 NotFound,
// 408/504 DeadlineExceeded, 429 ResourceExhausted, 501 Unimplemented, 503
// Unavailable, other 5xx Internal, else Unknown), the message from a JSON
// body's error.message (or error, or message) else the body's start.
absl::Status HttpErrorStatus(long http_code, std::string_view body);

// Makes the chunks' token counts (one per choice event as stamped) sum to the
// server's usage.completion_tokens: surplus events at the end count 0 tokens
// (e.g. a final event carrying only finish_reason); tokens beyond the events
// are added to the last one (a server that sent several tokens per event).
void ReconcileTokenCounts(int64_t completion_tokens, std::vector<ChunkArrival>* chunks);

}  // namespace tandem::bench
