// RequestMetrics: the request-level Prometheus metrics of a process that
// serves the public Generate API (tandem-router, `tandem serve`), with the
// names vLLM and Dynamo users know, prefixed tandem_:
//   tandem_requests_total{status}                   finish reason or gRPC code
//   tandem_time_to_first_token_seconds              histogram
//   tandem_inter_token_latency_seconds              histogram, per token
//   tandem_request_time_per_output_token_seconds    histogram, per request
//   tandem_e2e_request_latency_seconds              histogram, finished requests
//   tandem_request_queue_time_seconds               histogram (observed by the backend)
//   tandem_prompt_tokens_total, tandem_generation_tokens_total
//   tandem_requests_inflight, tandem_requests_queued  gauges
// and, for the router only (ExportAdmissionMetrics), its admission in tokens:
//   tandem_requests_queued_tokens, tandem_prefill_window_tokens  gauges
// Every series carries the process's base labels (model, role).
//
// Why a tracker per request rather than hooks in each backend: the service
// sees every chunk the client gets, in order, for both backends, so the
// counts here equal what clients received, token for token.
//
// Thread-safety: every method is thread-safe. A tracker's OnTokens is called
// in stream order (the sink's order); End may race with it and with itself
// (a client cancel against the last chunk): the first End wins.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/metrics/registry.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace tandem {

class RequestMetrics;

// One request's timing, from the moment the service accepted it.
class RequestTracker {
 public:
  RequestTracker(RequestMetrics* metrics, uint32_t prompt_tokens);
  // `n` tokens reached the client's stream now (n may be 0: text only).
  void OnTokens(size_t n);
  // The request ended with `status` ("stop", "length", or a gRPC code name).
  // Only the first call counts.
  void End(const std::string& status);

 private:
  RequestMetrics* const metrics_;
  const uint32_t prompt_tokens_;
  const std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point first_token_{}, last_token_{};
  uint64_t num_tokens_ = 0;
  std::atomic<bool> ended_{false};
};

class RequestMetrics {
 public:
  // `base` labels go on every series (e.g. {{"model","m"},{"role","router"}}).
  // `queued` (may be empty: then 0) reports requests waiting for capacity,
  // called at scrape time; it must stay valid while the registry is served.
  static absl::StatusOr<std::unique_ptr<RequestMetrics>> Create(metrics::Registry* registry, metrics::Labels base,
                                                                std::function<double()> queued);

  // A request was accepted: counts it in flight until its tracker's End.
  std::shared_ptr<RequestTracker> Begin(uint32_t prompt_tokens);
  // A request refused before it started (validation): requests_total only.
  void CountRefused(absl::StatusCode code);
  // A request moved to another decode worker after its own failed (token-replay migration).
  void CountMigration() { migrations_->Increment(); }
  // Time a request waited for capacity (the backend knows when it got it).
  void ObserveQueueTime(double seconds) { queue_time_->Observe(seconds); }
  // The queue-time family, for an engine in the same process that observes
  // its own queue under other labels (`tandem serve`).
  prometheus::Family<prometheus::Histogram>* queue_time_family() const { return queue_time_family_; }

  // "stop" / "length" for finishes, the lower-case gRPC code name otherwise.
  static std::string StatusLabel(absl::StatusCode code);

 private:
  friend class RequestTracker;
  RequestMetrics() = default;
  void CountStatus(const std::string& status);

  // Children looked up once at setup; the map is never written afterwards,
  // so the hot path reads it without a lock.
  absl::flat_hash_map<std::string, prometheus::Counter*> requests_;
  prometheus::Histogram* ttft_ = nullptr;
  prometheus::Histogram* itl_ = nullptr;
  prometheus::Histogram* tpot_ = nullptr;
  prometheus::Histogram* e2e_ = nullptr;
  prometheus::Histogram* queue_time_ = nullptr;
  prometheus::Family<prometheus::Histogram>* queue_time_family_ = nullptr;
  prometheus::Counter* prompt_tokens_ = nullptr;
  prometheus::Counter* generation_tokens_ = nullptr;
  prometheus::Counter* migrations_ = nullptr;
  prometheus::Gauge* inflight_ = nullptr;
};

// The router's admission (router/prefill_window.h) in tokens, beside
// tandem_requests_queued: the prompt (plus replayed) tokens of the requests
// waiting in its queue, and of those between Admit and the end of their
// prefill (the window). Both read at scrape time; they must stay valid while
// the registry is served.
[[nodiscard]] absl::Status ExportAdmissionMetrics(metrics::Registry* registry, const metrics::Labels& base,
                                                  std::function<double()> queued_tokens,
                                                  std::function<double()> window_tokens);

}  // namespace tandem
