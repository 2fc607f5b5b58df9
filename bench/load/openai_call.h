// The OpenAI-compatible HTTP backend: each request is one streamed
// `POST {base}/completions` (OpenAiCall), all of them driven by one HttpLoop
// thread. Each SSE event carrying a choice is stamped as a token arrival, as
// the gRPC path stamps chunks; the output length is the final
// usage.completion_tokens when sent (else the number of choice events).
// HTTP errors, error events, connection failures and timeouts become failed
// records with the message, as gRPC errors do.
// Thread-safety: as RequestBackend; records are written on the loop thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bench/load/request_backend.h"

namespace tandem::bench {

struct OpenAiConfig {
  std::string base_url;  // e.g. http://127.0.0.1:8080/v1 (no trailing '/')
  std::string model;     // the "model" field
  RequestOptions options;
};

std::unique_ptr<RequestBackend> MakeOpenAiBackend(OpenAiConfig config);

// GET {base_url}/models and the first model's id (blocking, at most
// `timeout_s`). An error names the URL and what went wrong.
absl::StatusOr<std::string> FetchFirstModelId(const std::string& base_url, const std::string& api_key,
                                              int64_t timeout_s);

}  // namespace tandem::bench
