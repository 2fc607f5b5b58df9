// OpenAiCall: one HTTP generation request while it runs. It owns the reply
// (the http::Responder) and the request's n x prompts backend requests
// ("choices"), and turns their chunks into the OpenAI response: SSE events
// as they come when streaming (role event, deltas, each choice's finish,
// the usage event, [DONE]), or one JSON object once every choice finished.
//
// Ends in exactly one of three ways, whichever comes first:
//   - every choice finished: the response completes, metrics count each
//     choice's finish, the key's lease is charged what was used;
//   - a choice failed: the other choices are cancelled in the backend and
//     the client gets the error (an HTTP status, or an error event when the
//     stream already answered 200);
//   - the client went away: every unfinished choice is cancelled in the
//     backend (its KV blocks freed), counted as cancelled.
// Chunks arriving after the end are dropped.
//
// Lifetime: the backend's sinks hold the call (shared_ptr) until their last
// chunk; the responder's client-gone callback holds it weakly (the call
// holds the responder). Whatever else the request holds (the drain ticket,
// the key's lease) lives as long as the call.
//
// Thread-safety: chunks of different choices arrive on any threads at once;
// one mutex orders them, and the responder's calls (which never block) are
// made under it so the events leave in that order. The backend is never
// called under the mutex.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/http/http_server.h"
#include "router/generation_backend.h"
#include "router/openai/openai_response.h"
#include "router/request_metrics.h"

namespace tandem::openai {

struct CallOptions {
  ResponseHeader header;
  bool stream = false;
  bool include_usage = false;
  LogprobsFormat logprobs;
  // Per choice, in response order: its backend id, prompt tokens, and the
  // text echoed before its output (completions' echo; "" otherwise).
  std::vector<std::string> backend_ids;
  std::vector<uint32_t> prompt_tokens;
  std::vector<std::string> echo;
  // Prompt tokens counted in usage (each prompt once, however many choices).
  uint64_t usage_prompt_tokens = 0;
  // Called once when the response ends, with the HTTP status it ended with
  // (200, the error's, or 499 when the client left). May be empty.
  std::function<void(int http_status)> on_end;
  // Called once at the end with the tokens used (prompt + generated), or -1
  // when the client left (unknown). May be empty.
  std::function<void(int64_t used_tokens)> on_used;
};

class OpenAiCall : public std::enable_shared_from_this<OpenAiCall> {
 public:
  // `backend` and `metrics` (may be null) must outlive the call; `hold`
  // (may be null) is kept until the call is destroyed (the drain ticket).
  OpenAiCall(CallOptions options, std::shared_ptr<http::Responder> responder, GenerationBackend* backend,
             RequestMetrics* metrics, std::shared_ptr<void> hold);

  // Starts every choice in the backend with its request. Call once, on a
  // call held by a shared_ptr; `requests` in the order of backend_ids.
  void Start(std::vector<ValidatedRequest> requests);

 private:
  struct Choice {
    std::string text;  // non-streamed: the whole text; streamed: only its length matters
    size_t text_bytes = 0;
    std::vector<SampledToken> logprobs;
    uint64_t tokens = 0;
    ChunkFinish finish = ChunkFinish::kNone;
    std::shared_ptr<RequestTracker> tracker;
  };

  void OnChunk(size_t choice, const absl::Status& status, GenerationChunk chunk);
  void OnClientGone();
  // Under mu_: ends the response with `status` (not OK); returns the backend
  // ids to cancel once mu_ is released.
  std::vector<std::string> FailLocked(const absl::Status& status);
  void FinishLocked();
  void CancelAll(const std::vector<std::string>& ids);

  const CallOptions options_;
  const std::shared_ptr<http::Responder> responder_;
  GenerationBackend* const backend_;
  RequestMetrics* const metrics_;
  const std::shared_ptr<void> hold_;

  std::mutex mu_;
  std::vector<Choice> choices_;  // guarded by mu_
  size_t unfinished_ = 0;        // guarded by mu_
  bool ended_ = false;           // guarded by mu_
};

}  // namespace tandem::openai
