// OpenAiService: the OpenAI-compatible HTTP API over a GenerationBackend,
// beside the gRPC Generation service and sharing what makes a request the
// same request in both: the one RequestValidator, the backend, the request
// metrics, the drain gate and the API keys. Routes:
//   GET  /health                 200 when ready (else 503), no key needed
//   GET  /v1/models, /v1/models/{id}
//   POST /v1/completions         prompt(s) -> n choices each
//   POST /v1/chat/completions    messages, rendered with the chat template
// Errors are OpenAI's JSON error objects with the HTTP status of the gRPC
// code (openai_response.h): 400 invalid, 401 no valid key, 404 unknown model
// or route, 429 overload or the key's limits (Retry-After), 503 no workers or
// draining. A client that disconnects cancels its request in the backend.
// Besides the shared request metrics: tandem_http_requests_total{endpoint,code}.
//
// Thread-safety: Handle() runs on the HTTP server's threads, concurrently;
// it never blocks (the backend's Start returns at once).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/drain_gate.h"
#include "common/http/http_server.h"
#include "common/metrics/registry.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "router/api_keys.h"
#include "router/generation_backend.h"
#include "router/request_metrics.h"
#include "router/request_validator.h"

namespace tandem::openai {

struct ServiceOptions {
  std::string model_name;        // the id /v1/models lists and requests must name (or omit)
  int64_t max_model_len = 0;     // the context: prompt + max_tokens; chat's default max_tokens fills it
  std::function<bool()> ready;   // /health; empty: always ready
  metrics::Labels metric_labels;  // base labels of tandem_http_requests_total
};

class OpenAiService {
 public:
  // Everything pointed to must outlive the service; `tokenizer`,
  // `chat_template` (nullopt: chat answers 400), `metrics`, `gate`, `auth`
  // and `registry` may be null.
  static absl::StatusOr<std::unique_ptr<OpenAiService>> Create(
      RequestValidator validator, const Tokenizer* tokenizer, std::optional<ChatTemplate> chat_template,
      GenerationBackend* backend, RequestMetrics* metrics, DrainGate* gate, const ApiKeyAuth* auth,
      metrics::Registry* registry, ServiceOptions options);

  void Handle(http::Request request, std::shared_ptr<http::Responder> responder);

  // The handler for http::Server::Start.
  http::Handler handler() {
    return [this](http::Request r, std::shared_ptr<http::Responder> w) { Handle(std::move(r), std::move(w)); };
  }

 private:
  OpenAiService(RequestValidator validator, const Tokenizer* tokenizer, std::optional<ChatTemplate> chat_template,
                GenerationBackend* backend, RequestMetrics* metrics, DrainGate* gate, const ApiKeyAuth* auth,
                ServiceOptions options);

  void Generate(bool chat, const http::Request& request, std::shared_ptr<http::Responder> responder);
  void ListModels(const std::string& only, std::shared_ptr<http::Responder> responder);
  // Answers with an error object and counts it under `endpoint`.
  void Fail(const std::string& endpoint, const absl::Status& status, const std::shared_ptr<http::Responder>& responder,
            int64_t retry_after_ms = -1);
  void Count(const std::string& endpoint, int http_status);

  const RequestValidator validator_;
  const Tokenizer* const tokenizer_;
  const std::optional<ChatTemplate> chat_template_;
  GenerationBackend* const backend_;
  RequestMetrics* const metrics_;
  DrainGate* const gate_;
  const ApiKeyAuth* const auth_;
  const ServiceOptions options_;
  const int64_t created_;      // /v1/models' `created`: when the service started
  const std::string instance_;  // backend ids: "<id>#<instance>-h<n>-<choice>", unique across routers
  std::atomic<uint64_t> next_id_{0};

  prometheus::Family<prometheus::Counter>* http_requests_ = nullptr;
  std::mutex counters_mu_;
  absl::flat_hash_map<std::string, prometheus::Counter*> counters_;  // "endpoint code", guarded by counters_mu_
};

}  // namespace tandem::openai
