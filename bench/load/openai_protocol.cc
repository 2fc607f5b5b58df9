#include "bench/load/openai_protocol.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {

std::string CompletionRequestBody(const BenchRequest& request, const CompletionOptions& options) {
  nlohmann::json j = {
      {"model", options.model},
      {"prompt", request.prompt_token_ids},
      {"max_tokens", request.output_len},
      {"stream", true},
      {"stream_options", {{"include_usage", true}}},
      {"temperature", options.temperature},
  };
  if (options.ignore_eos) j["ignore_eos"] = true;
  return j.dump();
}

void SseParser::Feed(std::string_view bytes, const std::function<void(const SseEvent&)>& on_event) {
  for (size_t i = 0; i < bytes.size();) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (bytes[i] == '\n') {
        ++i;
        continue;
      }
    }
    const size_t end = bytes.find_first_of("\r\n", i);
    if (end == std::string_view::npos) {
      line_.append(bytes.substr(i));
      return;
    }
    line_.append(bytes.substr(i, end - i));
    skip_lf_ = bytes[end] == '\r';
    i = end + 1;
    std::string line;
    line.swap(line_);
    Line(line, on_event);
  }
}

void SseParser::Line(std::string_view line, const std::function<void(const SseEvent&)>& on_event) {
  if (line.empty()) {  // end of an event
    if (has_error_) {
      on_event(error_);
    } else if (has_data_) {
      on_event(data_);
    }
    data_.data.clear();
    error_.data.clear();
    has_data_ = has_error_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment
  const size_t colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  if (field != "data" && field != "error") return;  // event, id, retry: not used here
  std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  const bool is_error = field == "error";
  SseEvent& event = is_error ? error_ : data_;
  bool& has = is_error ? has_error_ : has_data_;
  event.is_error = is_error;
  if (has) event.data.push_back('\n');
  event.data.append(value);
  has = true;
}

namespace {

absl::StatusCode CodeForHttp(long http_code, absl::StatusCode otherwise) {
  switch (http_code) {
    case 400: return absl::StatusCode::kInvalidArgument;
    case 401: return absl::StatusCode::kUnauthenticated;
    case 403: return absl::StatusCode::kPermissionDenied;
    case 404: return absl::StatusCode::kNotFound;
    case 408:
    case 504: return absl::StatusCode::kDeadlineExceeded;
    case 429: return absl::StatusCode::kResourceExhausted;
    case 501: return absl::StatusCode::kUnimplemented;
    case 503: return absl::StatusCode::kUnavailable;
    default: return http_code >= 500 && http_code < 600 ? absl::StatusCode::kInternal : otherwise;
  }
}

// {"error": {"code": 503, ...}} or {"code": 503, ...}: the code, else 0.
long ErrorCode(const nlohmann::json& j) {
  if (!j.is_object()) return 0;
  if (auto it = j.find("code"); it != j.end() && it->is_number_integer()) return it->get<long>();
  if (auto it = j.find("error"); it != j.end()) return ErrorCode(*it);
  return 0;
}

std::string ErrorMessage(const nlohmann::json& j) {
  if (!j.is_object()) return "";
  for (const char* key : {"error", "message", "detail"}) {
    auto it = j.find(key);
    if (it == j.end()) continue;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object()) {
      std::string inner = ErrorMessage(*it);
      return inner.empty() ? it->dump() : inner;
    }
  }
  return "";
}

}  // namespace

EventKind ApplyEvent(const SseEvent& event, StreamState* state) {
  const std::string& data = event.data;
  if (event.is_error) {
    const nlohmann::json j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
    std::string message = j.is_discarded() ? "" : ErrorMessage(j);
    if (message.empty()) message = data.substr(0, 500);
    state->error = absl::Status(CodeForHttp(j.is_discarded() ? 0 : ErrorCode(j), absl::StatusCode::kInternal),
                                absl::StrCat("error event: ", message));
    return EventKind::kError;
  }
  if (data == "[DONE]") {
    state->done = true;
    return EventKind::kDone;
  }
  const nlohmann::json j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    state->error = absl::InternalError(absl::StrCat("unreadable stream event: ", data.substr(0, 200)));
    return EventKind::kError;
  }
  if (j.contains("error")) return ApplyEvent(SseEvent{data, /*is_error=*/true}, state);
  if (auto usage = j.find("usage"); usage != j.end() && usage->is_object()) {
    if (auto p = usage->find("prompt_tokens"); p != usage->end() && p->is_number_integer()) {
      state->usage_prompt_tokens = p->get<int64_t>();
    }
    if (auto c = usage->find("completion_tokens"); c != usage->end() && c->is_number_integer()) {
      state->usage_completion_tokens = c->get<int64_t>();
    }
  }
  auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty()) return EventKind::kOther;
  const nlohmann::json& choice = choices->front();
  if (auto f = choice.find("finish_reason"); f != choice.end() && f->is_string()) {
    state->finish_reason = f->get<std::string>();
  }
  ++state->choice_events;
  return EventKind::kChoice;
}

absl::Status HttpErrorStatus(long http_code, std::string_view body) {
  const absl::StatusCode code = CodeForHttp(http_code, absl::StatusCode::kUnknown);
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  std::string message = j.is_discarded() ? "" : ErrorMessage(j);
  if (message.empty()) message = std::string(body.substr(0, 500));
  return absl::Status(code, absl::StrCat("HTTP ", http_code, ": ", message));
}

void ReconcileTokenCounts(int64_t completion_tokens, std::vector<ChunkArrival>* chunks) {
  int64_t left = std::max<int64_t>(completion_tokens, 0);
  for (ChunkArrival& c : *chunks) {
    c.num_tokens = left > 0 ? 1 : 0;
    left -= c.num_tokens;
  }
  if (left > 0 && !chunks->empty()) chunks->back().num_tokens += left;
}

}  // namespace tandem::bench
