#include "bench/load/openai_call.h"

#include <curl/curl.h>

#include "absl/strings/str_cat.h"
#include "bench/load/http_loop.h"
#include "bench/load/openai_protocol.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {
namespace {

using Clock = RequestBackend::Clock;

constexpr size_t kMaxErrorBody = 64 * 1024;  // kept of a non-200 response

// A failed transfer as a status, as close to gRPC's codes as libcurl says.
absl::Status CurlStatus(CURLcode result, const std::string& detail) {
  const std::string message = absl::StrCat(curl_easy_strerror(result), detail.empty() ? "" : ": ", detail);
  switch (result) {
    case CURLE_OPERATION_TIMEDOUT: return absl::DeadlineExceededError(message);
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE: return absl::UnavailableError(message);
    case CURLE_ABORTED_BY_CALLBACK: return absl::CancelledError(message);
    default: return absl::UnknownError(message);
  }
}

// Common easy-handle settings: no signals (threads), no Expect: 100-continue,
// the deadline as the whole transfer's timeout.
curl_slist* CommonSetup(CURL* easy, const std::string& url, const std::string& api_key, int64_t timeout_s,
                        char* error_buffer) {
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_s * 1000));
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
  curl_slist* headers = curl_slist_append(nullptr, "Expect:");
  headers = curl_slist_append(headers, "Accept: text/event-stream, application/json");
  if (!api_key.empty()) headers = curl_slist_append(headers, ("Authorization: Bearer " + api_key).c_str());
  return headers;
}

class OpenAiCall : public HttpTransfer {
 public:
  OpenAiCall(const OpenAiConfig& config, std::string body, Clock::time_point epoch, RequestRecord* record,
             std::function<void()> done)
      : easy_(curl_easy_init()), body_(std::move(body)), epoch_(epoch), record_(record), done_(std::move(done)) {
    error_buffer_[0] = '\0';
    headers_ = CommonSetup(easy_, config.base_url + "/completions", config.options.api_key,
                           config.options.timeout_s, error_buffer_);
    headers_ = curl_slist_append(headers_, "Content-Type: application/json");
    curl_easy_setopt(easy_, CURLOPT_HTTPHEADER, headers_);
    curl_easy_setopt(easy_, CURLOPT_POST, 1L);
    curl_easy_setopt(easy_, CURLOPT_POSTFIELDS, body_.data());
    curl_easy_setopt(easy_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body_.size()));
    curl_easy_setopt(easy_, CURLOPT_WRITEFUNCTION, &OpenAiCall::Write);
    curl_easy_setopt(easy_, CURLOPT_WRITEDATA, this);
  }

  ~OpenAiCall() override {
    curl_easy_cleanup(easy_);
    curl_slist_free_all(headers_);
  }

  CURL* easy() override { return easy_; }

  void StampStart() { record_->trace.start_ns = NowNs(); }

  void Finished(CURLcode result, const std::string& error) override {
    record_->trace.end_ns = NowNs();
    record_->status = Outcome(result, error_buffer_[0] != '\0' ? std::string(error_buffer_) : error);
    if (state_.usage_prompt_tokens) record_->usage_prompt_tokens = *state_.usage_prompt_tokens;
    record_->usage_completion_tokens = state_.usage_completion_tokens.value_or(state_.choice_events);
    if (state_.usage_completion_tokens) ReconcileTokenCounts(*state_.usage_completion_tokens, &record_->trace.chunks);
    record_->finish_reason = state_.finish_reason;
    done_();  // the loop deletes this afterwards
  }

 private:
  int64_t NowNs() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - epoch_).count();
  }

  static size_t Write(char* data, size_t size, size_t n, void* self) {
    return static_cast<OpenAiCall*>(self)->OnData(std::string_view(data, size * n)) ? size * n : 0;
  }

  // Returns false to abort the transfer (an error event was read).
  bool OnData(std::string_view bytes) {
    // Stamp first: events that came in one read arrived together.
    const int64_t now_ns = NowNs();
    if (http_code_ == 0) curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &http_code_);
    if (http_code_ != 200) {
      error_body_.append(bytes.substr(0, kMaxErrorBody - std::min(kMaxErrorBody, error_body_.size())));
      return true;
    }
    bool ok = true;
    sse_.Feed(bytes, [&](const SseEvent& event) {
      if (!ok || state_.done) return;
      switch (ApplyEvent(event, &state_)) {
        case EventKind::kChoice: record_->trace.chunks.push_back({now_ns, 1}); break;
        case EventKind::kError: ok = false; break;
        default: break;
      }
    });
    return ok;
  }

  absl::Status Outcome(CURLcode result, const std::string& error) const {
    if (!state_.error.ok()) return state_.error;
    if (result != CURLE_OK) return CurlStatus(result, error);
    long code = http_code_;
    if (code == 0) curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &code);
    if (code != 200) return HttpErrorStatus(code, error_body_);
    if (!state_.done) return absl::UnavailableError("the stream ended before data: [DONE]");
    return absl::OkStatus();
  }

  CURL* const easy_;
  curl_slist* headers_ = nullptr;
  const std::string body_;
  const Clock::time_point epoch_;
  RequestRecord* const record_;
  const std::function<void()> done_;
  char error_buffer_[CURL_ERROR_SIZE];
  long http_code_ = 0;
  std::string error_body_;
  SseParser sse_;
  StreamState state_;
};

class OpenAiBackend : public RequestBackend {
 public:
  explicit OpenAiBackend(OpenAiConfig config) : config_(std::move(config)) {
    completion_.model = config_.model;
    completion_.ignore_eos = config_.options.ignore_eos;
    completion_.temperature = config_.options.temperature.value_or(0.0f);
  }
  ~OpenAiBackend() override { loop_.Stop(); }

  void Start(const BenchRequest& request, const std::string& /*request_id*/, Clock::time_point epoch,
             RequestRecord* record, std::function<void()> done) override {
    auto call = std::make_unique<OpenAiCall>(config_, CompletionRequestBody(request, completion_), epoch, record,
                                             std::move(done));
    call->StampStart();
    loop_.Submit(std::move(call));
  }

 private:
  const OpenAiConfig config_;
  CompletionOptions completion_;
  HttpLoop loop_;
};

size_t AppendBody(char* data, size_t size, size_t n, void* out) {
  auto* body = static_cast<std::string*>(out);
  if (body->size() < (1 << 20)) body->append(data, size * n);
  return size * n;
}

}  // namespace

std::unique_ptr<RequestBackend> MakeOpenAiBackend(OpenAiConfig config) {
  return std::make_unique<OpenAiBackend>(std::move(config));
}

absl::StatusOr<std::string> FetchFirstModelId(const std::string& base_url, const std::string& api_key,
                                              int64_t timeout_s) {
  EnsureCurlGlobalInit();
  const std::string url = base_url + "/models";
  CURL* easy = curl_easy_init();
  char error_buffer[CURL_ERROR_SIZE] = {0};
  curl_slist* headers = CommonSetup(easy, url, api_key, timeout_s, error_buffer);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  std::string body;
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &AppendBody);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
  const CURLcode result = curl_easy_perform(easy);
  long code = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(easy);
  curl_slist_free_all(headers);
  const std::string where = absl::StrCat("GET ", url, ": ");
  if (result != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(where, CurlStatus(result, error_buffer).message()));
  }
  if (code != 200) return absl::FailedPreconditionError(absl::StrCat(where, HttpErrorStatus(code, body).message()));
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
      j["data"][0].is_object() && j["data"][0].contains("id") && j["data"][0]["id"].is_string()) {
    return j["data"][0]["id"].get<std::string>();
  }
  return absl::FailedPreconditionError(
      absl::StrCat(where, "no model id in the response (want {\"data\": [{\"id\": ...}]}): ", body.substr(0, 300)));
}

}  // namespace tandem::bench
