// RequestMetrics (see request_metrics.h).
#include "router/request_metrics.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/metrics/buckets.h"
#include "common/status_macros.h"

namespace tandem {
namespace {

using metrics::Labels;

// Every code a request can end with, so each requests_total series exists
// (at 0) from the start: rate() over a series born mid-window undercounts.
constexpr std::array<absl::StatusCode, 16> kErrorCodes = {
    absl::StatusCode::kCancelled,         absl::StatusCode::kUnknown,
    absl::StatusCode::kInvalidArgument,   absl::StatusCode::kDeadlineExceeded,
    absl::StatusCode::kNotFound,          absl::StatusCode::kAlreadyExists,
    absl::StatusCode::kPermissionDenied,  absl::StatusCode::kResourceExhausted,
    absl::StatusCode::kFailedPrecondition, absl::StatusCode::kAborted,
    absl::StatusCode::kOutOfRange,        absl::StatusCode::kUnimplemented,
    absl::StatusCode::kInternal,          absl::StatusCode::kUnavailable,
    absl::StatusCode::kDataLoss,          absl::StatusCode::kUnauthenticated};

Labels With(Labels base, const Labels& extra) {
  base.insert(extra.begin(), extra.end());
  return base;
}

}  // namespace

std::string RequestMetrics::StatusLabel(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

absl::StatusOr<std::unique_ptr<RequestMetrics>> RequestMetrics::Create(metrics::Registry* registry, Labels base,
                                                                       std::function<double()> queued) {
  std::unique_ptr<RequestMetrics> m(new RequestMetrics());
  metrics::Registry& r = *registry;
  auto histogram = [&](const char* name, const char* help,
                       std::span<const double> bounds) -> absl::StatusOr<prometheus::Histogram*> {
    absl::StatusOr<prometheus::Family<prometheus::Histogram>*> f = r.AddHistogram(name, help);
    if (!f.ok()) return f.status();
    return metrics::AddChild(*f, base, metrics::Buckets(bounds));
  };
  auto counter = [&](const char* name, const char* help) -> absl::StatusOr<prometheus::Counter*> {
    absl::StatusOr<prometheus::Family<prometheus::Counter>*> f = r.AddCounter(name, help);
    if (!f.ok()) return f.status();
    return metrics::AddChild(*f, base);
  };

  absl::StatusOr<prometheus::Family<prometheus::Counter>*> requests =
      r.AddCounter("tandem_requests_total", "Requests ended, by status: the finish reason (stop, length) or the gRPC code.");
  if (!requests.ok()) return requests.status();
  std::vector<std::string> statuses = {"stop", "length"};
  for (absl::StatusCode c : kErrorCodes) statuses.push_back(StatusLabel(c));
  for (const std::string& s : statuses) {
    absl::StatusOr<prometheus::Counter*> child = metrics::AddChild(*requests, With(base, {{"status", s}}));
    if (!child.ok()) return child.status();
    m->requests_[s] = *child;
  }

  ASSIGN_OR_RETURN(m->ttft_, histogram("tandem_time_to_first_token_seconds",
                                    "Time from the request's arrival to its first token reaching the stream.",
                                    metrics::kTtftBucketsSeconds));
  ASSIGN_OR_RETURN(m->itl_, histogram("tandem_inter_token_latency_seconds",
                                   "Time between tokens of a stream, one observation per token after the first.",
                                   metrics::kItlBucketsSeconds));
  ASSIGN_OR_RETURN(m->tpot_, histogram("tandem_request_time_per_output_token_seconds",
                                    "Per finished request: (last token - first token) / (output tokens - 1).",
                                    metrics::kItlBucketsSeconds));
  ASSIGN_OR_RETURN(m->e2e_, histogram("tandem_e2e_request_latency_seconds",
                                   "Time from arrival to the last token, finished requests only.",
                                   metrics::kE2eLatencyBucketsSeconds));
  absl::StatusOr<prometheus::Family<prometheus::Histogram>*> queue =
      r.AddHistogram("tandem_request_queue_time_seconds",
                     "Time a request waited for capacity (router: for a decode reservation; engine: to be scheduled).");
  if (!queue.ok()) return queue.status();
  m->queue_time_family_ = *queue;
  ASSIGN_OR_RETURN(m->queue_time_,
                   metrics::AddChild(*queue, base, metrics::Buckets(metrics::kQueueTimeBucketsSeconds)));
  ASSIGN_OR_RETURN(m->prompt_tokens_, counter("tandem_prompt_tokens_total", "Prompt tokens of requests that produced a token."));
  ASSIGN_OR_RETURN(m->generation_tokens_, counter("tandem_generation_tokens_total", "Tokens streamed to clients."));
  ASSIGN_OR_RETURN(m->migrations_, counter("tandem_request_migrations_total",
                                           "Requests moved to another decode worker after theirs failed mid-stream "
                                           "(token-replay migration)."));
  absl::StatusOr<prometheus::Family<prometheus::Gauge>*> inflight =
      r.AddGauge("tandem_requests_inflight", "Requests accepted and not yet ended (queued ones included).");
  if (!inflight.ok()) return inflight.status();
  ASSIGN_OR_RETURN(m->inflight_, metrics::AddChild(*inflight, base));
  absl::StatusOr<metrics::CallbackFamily*> q =
      r.AddCallbackGauge("tandem_requests_queued", "Requests waiting for capacity now.");
  if (!q.ok()) return q.status();
  if (!queued) queued = [] { return 0.0; };
  if (absl::Status st = (*q)->Add(base, std::move(queued)); !st.ok()) return st;
  return m;
}

absl::Status ExportAdmissionMetrics(metrics::Registry* registry, const Labels& base,
                                    std::function<double()> queued_tokens, std::function<double()> window_tokens) {
  absl::StatusOr<metrics::CallbackFamily*> q = registry->AddCallbackGauge(
      "tandem_requests_queued_tokens", "Prompt tokens (plus replayed ones) of the requests waiting in the queue now.");
  if (!q.ok()) return q.status();
  RETURN_IF_ERROR((*q)->Add(base, std::move(queued_tokens)));
  absl::StatusOr<metrics::CallbackFamily*> w = registry->AddCallbackGauge(
      "tandem_prefill_window_tokens",
      "Prompt tokens (plus replayed ones) of the requests between their decode reservation and the end of their "
      "prefill now (the admission window; bounded by --max-prefill-tokens-per-worker x prefill workers).");
  if (!w.ok()) return w.status();
  return (*w)->Add(base, std::move(window_tokens));
}

std::shared_ptr<RequestTracker> RequestMetrics::Begin(uint32_t prompt_tokens) {
  inflight_->Increment();
  return std::make_shared<RequestTracker>(this, prompt_tokens);
}

void RequestMetrics::CountRefused(absl::StatusCode code) { CountStatus(StatusLabel(code)); }

void RequestMetrics::CountStatus(const std::string& status) {
  auto it = requests_.find(status);
  // Every status a request can end with was created at setup; "ok" is not
  // one (a stream ends with a finish reason), so this never misses.
  if (it != requests_.end()) it->second->Increment();
}

RequestTracker::RequestTracker(RequestMetrics* metrics, uint32_t prompt_tokens)
    : metrics_(metrics), prompt_tokens_(prompt_tokens), start_(std::chrono::steady_clock::now()) {}

void RequestTracker::OnTokens(size_t n) {
  if (n == 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (num_tokens_ == 0) {
    metrics_->ttft_->Observe(std::chrono::duration<double>(now - start_).count());
    // The prompt was processed once a token came of it.
    metrics_->prompt_tokens_->Increment(prompt_tokens_);
    first_token_ = now;
    // Several tokens in the first chunk arrived together: 0 s apart.
    for (size_t i = 1; i < n; ++i) metrics_->itl_->Observe(0.0);
  } else {
    // A chunk of n tokens after a gap: each token waited gap / n on average.
    const double per_token = std::chrono::duration<double>(now - last_token_).count() / static_cast<double>(n);
    for (size_t i = 0; i < n; ++i) metrics_->itl_->Observe(per_token);
  }
  last_token_ = now;
  num_tokens_ += n;
  metrics_->generation_tokens_->Increment(static_cast<double>(n));
}

void RequestTracker::End(const std::string& status) {
  if (ended_.exchange(true)) return;
  metrics_->inflight_->Decrement();
  metrics_->CountStatus(status);
  if (status != "stop" && status != "length") return;
  metrics_->e2e_->Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  if (num_tokens_ > 1) {
    metrics_->tpot_->Observe(std::chrono::duration<double>(last_token_ - first_token_).count() /
                             static_cast<double>(num_tokens_ - 1));
  }
}

}  // namespace tandem
