#include "router/openai/openai_response.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace tandem::openai {
namespace {

// JSON has no -inf: a token the model gives probability 0 gets vLLM's floor.
double FiniteLogprob(float lp) { return std::isfinite(lp) ? lp : -9999.0; }

std::string TokenText(const LogprobsFormat& lp, int32_t id) {
  if (lp.tokenizer == nullptr) return absl::StrCat("token_id:", id);
  const int32_t ids[1] = {id};
  return lp.tokenizer->Decode(ids, /*skip_special_tokens=*/false);
}

Json Bytes(const std::string& s) {
  Json b = Json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

const char* FinishName(ChunkFinish f) {
  return f == ChunkFinish::kStop ? "stop" : "length";
}

Json FinishJson(ChunkFinish f) { return f == ChunkFinish::kNone ? Json(nullptr) : Json(FinishName(f)); }

// Completions' shape: parallel arrays; top_logprobs maps token text -> logprob.
Json CompletionLogprobs(const std::vector<SampledToken>& tokens, const LogprobsFormat& lp, size_t text_offset) {
  Json out = Json::object();
  Json offsets = Json::array(), token_lps = Json::array(), strs = Json::array(), tops = Json::array();
  size_t offset = text_offset;
  for (const SampledToken& t : tokens) {
    const std::string s = TokenText(lp, t.token_id);
    offsets.push_back(offset);
    offset += s.size();
    strs.push_back(s);
    token_lps.push_back(FiniteLogprob(t.logprob));
    Json top = Json::object();
    for (size_t k = 0; k < t.top_logprobs.size() && k < *lp.top; ++k) {
      top[TokenText(lp, t.top_logprobs[k].first)] = FiniteLogprob(t.top_logprobs[k].second);
    }
    tops.push_back(std::move(top));
  }
  out["text_offset"] = std::move(offsets);
  out["token_logprobs"] = std::move(token_lps);
  out["tokens"] = std::move(strs);
  out["top_logprobs"] = std::move(tops);
  return out;
}

// Chat's shape: one object per token with its bytes and alternatives.
Json ChatLogprobs(const std::vector<SampledToken>& tokens, const LogprobsFormat& lp) {
  Json content = Json::array();
  for (const SampledToken& t : tokens) {
    const std::string s = TokenText(lp, t.token_id);
    Json top = Json::array();
    for (size_t k = 0; k < t.top_logprobs.size() && k < *lp.top; ++k) {
      const std::string ts = TokenText(lp, t.top_logprobs[k].first);
      top.push_back(Json{{"token", ts}, {"logprob", FiniteLogprob(t.top_logprobs[k].second)}, {"bytes", Bytes(ts)}});
    }
    content.push_back(
        Json{{"token", s}, {"logprob", FiniteLogprob(t.logprob)}, {"bytes", Bytes(s)}, {"top_logprobs", std::move(top)}});
  }
  return Json{{"content", std::move(content)}};
}

Json LogprobsJson(Endpoint e, const std::vector<SampledToken>& tokens, const LogprobsFormat& lp,
                  size_t text_offset) {
  if (!lp.top) return nullptr;
  return e == Endpoint::kCompletions ? CompletionLogprobs(tokens, lp, text_offset) : ChatLogprobs(tokens, lp);
}

Json Head(const ResponseHeader& h, bool chunk) {
  const char* object = h.endpoint == Endpoint::kCompletions ? "text_completion"
                       : chunk                              ? "chat.completion.chunk"
                                                            : "chat.completion";
  return Json{{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}

Json UsageJson(UsageCounts u) {
  return Json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

std::string Event(const Json& j) { return absl::StrCat("data: ", j.dump(-1, ' ', false, Json::error_handler_t::replace), "\n\n"); }

const char* ErrorType(int http_status) {
  switch (http_status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    case 504: return "timeout_error";
    default: return "server_error";
  }
}

Json ErrorJson(const absl::Status& status) {
  const int http = HttpStatus(status.code());
  const std::string param = ErrorParam(status.message());
  Json error = Json::object();
  error["message"] = ErrorMessage(status.message());
  error["type"] = ErrorType(http);
  error["param"] = param.empty() ? Json(nullptr) : Json(param);
  error["code"] = http;
  Json out = Json::object();
  out["error"] = std::move(error);
  return out;
}

}  // namespace

std::string ResponseBody(const ResponseHeader& h, const std::vector<ChoiceOutput>& choices, UsageCounts usage,
                         const LogprobsFormat& lp) {
  Json out = Head(h, /*chunk=*/false);
  Json cs = Json::array();
  for (const ChoiceOutput& c : choices) {
    Json choice{{"index", c.index}};
    if (h.endpoint == Endpoint::kCompletions) {
      choice["text"] = c.text;
      choice["logprobs"] = LogprobsJson(h.endpoint, c.logprobs, lp, 0);
    } else {
      choice["message"] = Json{{"role", "assistant"}, {"content", c.text}};
      choice["logprobs"] = LogprobsJson(h.endpoint, c.logprobs, lp, 0);
    }
    choice["finish_reason"] = FinishJson(c.finish);
    cs.push_back(std::move(choice));
  }
  out["choices"] = std::move(cs);
  out["usage"] = UsageJson(usage);
  // Lone surrogates cannot occur (text is complete UTF-8), but a byte-level
  // token string may hold invalid UTF-8: replaced, never an exception.
  return out.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ChunkEvent(const ResponseHeader& h, const ChoiceOutput& c, const LogprobsFormat& lp, size_t text_offset,
                       bool with_usage_null) {
  Json out = Head(h, /*chunk=*/true);
  Json choice{{"index", c.index}};
  if (h.endpoint == Endpoint::kCompletions) {
    choice["text"] = c.text;
    choice["logprobs"] = LogprobsJson(h.endpoint, c.logprobs, lp, text_offset);
  } else {
    Json delta = Json::object();
    if (c.role) delta["role"] = "assistant";
    if (c.role || !c.text.empty() || !c.logprobs.empty()) delta["content"] = c.text;
    choice["delta"] = std::move(delta);
    choice["logprobs"] = c.logprobs.empty() ? Json(nullptr) : LogprobsJson(h.endpoint, c.logprobs, lp, 0);
  }
  choice["finish_reason"] = FinishJson(c.finish);
  out["choices"] = Json::array({std::move(choice)});
  if (with_usage_null) out["usage"] = nullptr;
  return Event(out);
}

std::string UsageEvent(const ResponseHeader& h, UsageCounts usage) {
  Json out = Head(h, /*chunk=*/true);
  out["choices"] = Json::array();
  out["usage"] = UsageJson(usage);
  return Event(out);
}

int HttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    case absl::StatusCode::kCancelled: return 499;
    default: return 500;
  }
}

std::string ErrorBody(const absl::Status& status) {
  return ErrorJson(status).dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ErrorEvent(const absl::Status& status) { return Event(ErrorJson(status)); }

}  // namespace tandem::openai
