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

void SseParser::Feed(std::string_view bytes, const std::function<void(const std::string&)>& on_event) {
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

void SseParser::Line(std::string_view line, const std::function<void(const std::string&)>& on_event) {
  if (line.empty()) {  // end of an event
    if (has_data_) on_event(data_);
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment
  const size_t colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  if (field != "data") return;  // event, id, retry: not used here
  std::string_view value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (has_data_) data_.push_back('\n');
  data_.append(value);
  has_data_ = true;
}

namespace {

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

EventKind ApplyEvent(const std::string& data, StreamState* state) {
  if (data == "[DONE]") {
    state->done = true;
    return EventKind::kDone;
  }
  const nlohmann::json j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    state->error = absl::InternalError(absl::StrCat("unreadable stream event: ", data.substr(0, 200)));
    return EventKind::kError;
  }
  if (j.contains("error")) {
    std::string message = ErrorMessage(j);
    state->error = absl::InternalError(absl::StrCat("error event: ", message.empty() ? data.substr(0, 200) : message));
    return EventKind::kError;
  }
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
  absl::StatusCode code = absl::StatusCode::kUnknown;
  switch (http_code) {
    case 400: code = absl::StatusCode::kInvalidArgument; break;
    case 401: code = absl::StatusCode::kUnauthenticated; break;
    case 403: code = absl::StatusCode::kPermissionDenied; break;
    case 404: code = absl::StatusCode::kNotFound; break;
    case 408:
    case 504: code = absl::StatusCode::kDeadlineExceeded; break;
    case 429: code = absl::StatusCode::kResourceExhausted; break;
    case 501: code = absl::StatusCode::kUnimplemented; break;
    case 503: code = absl::StatusCode::kUnavailable; break;
    default:
      if (http_code >= 500 && http_code < 600) code = absl::StatusCode::kInternal;
  }
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
