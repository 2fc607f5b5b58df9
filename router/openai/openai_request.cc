#include "router/openai/openai_request.h"

#include <cmath>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_nesting.h"
#include "common/status_macros.h"

namespace tandem::openai {
namespace {

absl::Status Invalid(absl::string_view param, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(param, ": ", why));
}

std::string TypeName(const Json& v) { return v.type_name(); }

// The member `name`, or null when absent or JSON null (OpenAI clients send
// null for "not given").
const Json* Member(const Json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status ReadBool(const Json& body, const char* name, bool* out) {
  const Json* v = Member(body, name);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return Invalid(name, absl::StrCat("must be a boolean, not ", TypeName(*v)));
  *out = v->get<bool>();
  return absl::OkStatus();
}

// An integer in [lo, hi]; `*present` (if given) says whether it was sent.
absl::Status ReadInt(const Json& body, const char* name, int64_t lo, int64_t hi, int64_t* out,
                     bool* present = nullptr) {
  const Json* v = Member(body, name);
  if (present != nullptr) *present = v != nullptr;
  if (v == nullptr) return absl::OkStatus();
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi) || (lo > 0 && u < static_cast<uint64_t>(lo))) {
      return Invalid(name, absl::StrCat(u, " must be in [", lo, ", ", hi, "]"));
    }
    *out = static_cast<int64_t>(u);
    return absl::OkStatus();
  }
  if (!v->is_number_integer()) return Invalid(name, absl::StrCat("must be an integer, not ", TypeName(*v)));
  const int64_t i = v->get<int64_t>();
  if (i < lo || i > hi) return Invalid(name, absl::StrCat(i, " must be in [", lo, ", ", hi, "]"));
  *out = i;
  return absl::OkStatus();
}

absl::Status ReadFloat(const Json& body, const char* name, std::optional<float>* out) {
  const Json* v = Member(body, name);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) return Invalid(name, absl::StrCat("must be a number, not ", TypeName(*v)));
  *out = static_cast<float>(v->get<double>());
  return absl::OkStatus();
}

// Fields that are accepted and change nothing here.
bool IsIgnoredField(std::string_view name) {
  static const auto* const kIgnored = new absl::flat_hash_set<std::string_view>{
      "user", "metadata", "store", "service_tier", "parallel_tool_calls"};
  return kIgnored->contains(name);
}

// Refuses members of `body` outside `known` (and the ignored ones).
absl::Status CheckKnownFields(const Json& body, const absl::flat_hash_set<std::string_view>& known) {
  for (auto it = body.begin(); it != body.end(); ++it) {
    if (!known.contains(it.key()) && !IsIgnoredField(it.key())) {
      return Invalid(it.key(), "unknown parameter (not supported by this server)");
    }
  }
  return absl::OkStatus();
}

// Parameters whose only accepted values are their neutral ones: anything
// else would ask for a behaviour this server does not have.
absl::Status CheckUnsupported(const Json& body) {
  if (const Json* v = Member(body, "logit_bias"); v != nullptr && !(v->is_object() && v->empty())) {
    return Invalid("logit_bias", "not supported");
  }
  if (const Json* v = Member(body, "suffix"); v != nullptr && !(v->is_string() && v->get<std::string>().empty())) {
    return Invalid("suffix", "not supported");
  }
  if (const Json* v = Member(body, "tools"); v != nullptr && !(v->is_array() && v->empty())) {
    return Invalid("tools", "tool calling is not supported");
  }
  if (const Json* v = Member(body, "tool_choice"); v != nullptr && *v != "none") {
    return Invalid("tool_choice", "tool calling is not supported (only \"none\")");
  }
  if (const Json* v = Member(body, "functions"); v != nullptr) return Invalid("functions", "not supported");
  if (const Json* v = Member(body, "function_call"); v != nullptr) return Invalid("function_call", "not supported");
  if (const Json* v = Member(body, "response_format");
      v != nullptr && !(v->is_object() && v->value("type", "") == "text" && v->size() == 1)) {
    return Invalid("response_format", "only {\"type\": \"text\"} is supported");
  }
  if (const Json* v = Member(body, "modalities"); v != nullptr && *v != Json::array({"text"})) {
    return Invalid("modalities", "only [\"text\"] is supported");
  }
  bool flag = true;
  RETURN_IF_ERROR(ReadBool(body, "skip_special_tokens", &flag));
  if (!flag) return Invalid("skip_special_tokens", "only true is supported");
  flag = false;
  RETURN_IF_ERROR(ReadBool(body, "include_stop_str_in_output", &flag));
  if (flag) return Invalid("include_stop_str_in_output", "only false is supported");
  int64_t min_tokens = 0;
  RETURN_IF_ERROR(ReadInt(body, "min_tokens", 0, 0, &min_tokens));
  return absl::OkStatus();
}

// What both endpoints share: model, sampling, n, stream, stop, the extras.
absl::Status ReadCommon(const Json& body, ParsedRequest* r) {
  if (const Json* v = Member(body, "model"); v != nullptr) {
    if (!v->is_string()) return Invalid("model", absl::StrCat("must be a string, not ", TypeName(*v)));
    r->model = v->get<std::string>();
  }
  RETURN_IF_ERROR(CheckUnsupported(body));
  v1::SamplingParams& s = r->sampling;
  std::optional<float> f;
  RETURN_IF_ERROR(ReadFloat(body, "temperature", &f));
  if (f) s.set_temperature(*std::exchange(f, std::nullopt));
  RETURN_IF_ERROR(ReadFloat(body, "top_p", &f));
  if (f) s.set_top_p(*std::exchange(f, std::nullopt));
  RETURN_IF_ERROR(ReadFloat(body, "min_p", &f));
  if (f) s.set_min_p(*std::exchange(f, std::nullopt));
  RETURN_IF_ERROR(ReadFloat(body, "repetition_penalty", &f));
  if (f) s.set_repetition_penalty(*std::exchange(f, std::nullopt));
  RETURN_IF_ERROR(ReadFloat(body, "presence_penalty", &f));
  if (f) s.set_presence_penalty(*std::exchange(f, std::nullopt));
  RETURN_IF_ERROR(ReadFloat(body, "frequency_penalty", &f));
  if (f) s.set_frequency_penalty(*std::exchange(f, std::nullopt));
  int64_t i = 0;
  bool present = false;
  RETURN_IF_ERROR(ReadInt(body, "top_k", -1, std::numeric_limits<int32_t>::max(), &i, &present));
  if (present) s.set_top_k(static_cast<int32_t>(i));
  RETURN_IF_ERROR(ReadInt(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                          &i, &present));
  // Negative seeds (Python clients' random ints) are as good as any: their bits.
  if (present) s.set_seed(static_cast<uint64_t>(i));
  RETURN_IF_ERROR(ReadInt(body, "max_tokens", 1, std::numeric_limits<uint32_t>::max(), &i, &present));
  if (present) s.set_max_tokens(static_cast<uint32_t>(i));
  bool ignore_eos = false;
  RETURN_IF_ERROR(ReadBool(body, "ignore_eos", &ignore_eos));
  s.set_ignore_eos(ignore_eos);
  if (const Json* v = Member(body, "stop"); v != nullptr) {
    if (v->is_string()) {
      s.add_stop(v->get<std::string>());
    } else if (v->is_array()) {
      for (size_t k = 0; k < v->size(); ++k) {
        if (!(*v)[k].is_string()) return Invalid(absl::StrCat("stop[", k, "]"), "must be a string");
        s.add_stop((*v)[k].get<std::string>());
      }
    } else {
      return Invalid("stop", absl::StrCat("must be a string or an array of strings, not ", TypeName(*v)));
    }
  }
  if (const Json* v = Member(body, "stop_token_ids"); v != nullptr) {
    if (!v->is_array()) return Invalid("stop_token_ids", "must be an array of token ids");
    for (size_t k = 0; k < v->size(); ++k) {
      if (!(*v)[k].is_number_unsigned() || (*v)[k].get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
        return Invalid(absl::StrCat("stop_token_ids[", k, "]"), "must be a token id (a non-negative integer)");
      }
      s.add_stop_token_ids((*v)[k].get<uint32_t>());
    }
  }
  RETURN_IF_ERROR(ReadInt(body, "priority", std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(),
                          &i, &present));
  if (present) r->priority = static_cast<int32_t>(i);
  RETURN_IF_ERROR(ReadInt(body, "n", 1, kMaxChoices, &i, &present));
  if (present) r->n = static_cast<uint32_t>(i);
  RETURN_IF_ERROR(ReadInt(body, "best_of", 1, kMaxChoices, &i, &present));
  if (present && i != r->n) return Invalid("best_of", "only best_of = n is supported");
  RETURN_IF_ERROR(ReadBool(body, "stream", &r->stream));
  if (const Json* v = Member(body, "stream_options"); v != nullptr) {
    if (!r->stream) return Invalid("stream_options", "allowed only when stream is true");
    if (!v->is_object()) return Invalid("stream_options", "must be an object");
    for (auto it = v->begin(); it != v->end(); ++it) {
      if (it.key() != "include_usage" && it.key() != "continuous_usage_stats") {
        return Invalid(absl::StrCat("stream_options.", it.key()), "unknown parameter");
      }
    }
    RETURN_IF_ERROR(ReadBool(*v, "include_usage", &r->include_usage));
    bool continuous = false;
    RETURN_IF_ERROR(ReadBool(*v, "continuous_usage_stats", &continuous));
    if (continuous) return Invalid("stream_options.continuous_usage_stats", "not supported");
  }
  return absl::OkStatus();
}

absl::StatusOr<Json> ParseBody(std::string_view body) {
  RETURN_IF_ERROR(CheckJsonNesting(body, 32));
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("body", "not valid JSON");
  if (!j.is_object()) return Invalid("body", absl::StrCat("must be a JSON object, not ", TypeName(j)));
  return j;
}

// A token id list; `where` names it in errors.
absl::StatusOr<std::vector<uint32_t>> ReadTokenIds(const Json& v, const std::string& where) {
  std::vector<uint32_t> ids;
  ids.reserve(v.size());
  for (size_t k = 0; k < v.size(); ++k) {
    if (!v[k].is_number_unsigned() || v[k].get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
      return Invalid(absl::StrCat(where, "[", k, "]"), "must be a token id (a non-negative integer)");
    }
    ids.push_back(v[k].get<uint32_t>());
  }
  if (ids.empty()) return Invalid(where, "empty");
  return ids;
}

// OpenAI's four prompt forms: "text", ["text", ...], [id, ...], [[id, ...], ...].
absl::StatusOr<std::vector<Prompt>> ReadPrompts(const Json& body) {
  const Json* v = Member(body, "prompt");
  if (v == nullptr) return Invalid("prompt", "required");
  std::vector<Prompt> prompts;
  if (v->is_string()) {
    prompts.push_back({v->get<std::string>(), {}});
    return prompts;
  }
  if (!v->is_array() || v->empty()) {
    return Invalid("prompt", "must be a string, an array of strings, or token ids (one list or a list of lists)");
  }
  if ((*v)[0].is_number()) {
    ASSIGN_OR_RETURN(std::vector<uint32_t> ids, ReadTokenIds(*v, "prompt"));
    prompts.push_back({"", std::move(ids)});
    return prompts;
  }
  for (size_t k = 0; k < v->size(); ++k) {
    const Json& p = (*v)[k];
    const std::string where = absl::StrCat("prompt[", k, "]");
    if (p.is_string()) {
      prompts.push_back({p.get<std::string>(), {}});
    } else if (p.is_array()) {
      ASSIGN_OR_RETURN(std::vector<uint32_t> ids, ReadTokenIds(p, where));
      prompts.push_back({"", std::move(ids)});
    } else {
      return Invalid(where, absl::StrCat("must be a string or a list of token ids, not ", TypeName(p)));
    }
  }
  return prompts;
}

// A chat message's content as one string: text parts joined by newlines.
absl::StatusOr<Json> ReadContent(const Json& content, const std::string& where) {
  if (content.is_null() || content.is_string()) return content;
  if (!content.is_array()) return Invalid(where, "must be a string or an array of content parts");
  std::vector<std::string> texts;
  for (size_t k = 0; k < content.size(); ++k) {
    const Json& part = content[k];
    const std::string at = absl::StrCat(where, "[", k, "]");
    if (!part.is_object()) return Invalid(at, "must be an object");
    const auto type = part.find("type");
    if (type == part.end() || !type->is_string()) return Invalid(absl::StrCat(at, ".type"), "required");
    if (*type != "text") {
      return Invalid(absl::StrCat(at, ".type"),
                     absl::StrCat("'", type->get<std::string>(), "' is not supported (text parts only)"));
    }
    const auto text = part.find("text");
    if (text == part.end() || !text->is_string()) return Invalid(absl::StrCat(at, ".text"), "must be a string");
    texts.push_back(text->get<std::string>());
  }
  return Json(absl::StrJoin(texts, "\n"));
}

absl::StatusOr<Json> ReadMessages(const Json& body) {
  const Json* v = Member(body, "messages");
  if (v == nullptr) return Invalid("messages", "required");
  if (!v->is_array() || v->empty()) return Invalid("messages", "must be a non-empty array of messages");
  Json messages = Json::array();
  for (size_t k = 0; k < v->size(); ++k) {
    const Json& m = (*v)[k];
    const std::string where = absl::StrCat("messages[", k, "]");
    if (!m.is_object()) return Invalid(where, "must be an object");
    const auto role = m.find("role");
    if (role == m.end() || !role->is_string() || role->get<std::string>().empty()) {
      return Invalid(absl::StrCat(where, ".role"), "must be a non-empty string");
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      return Invalid(absl::StrCat(where, ".tool_calls"), "tool calling is not supported");
    }
    Json copy = m;
    if (auto c = m.find("content"); c != m.end()) {
      ASSIGN_OR_RETURN(copy["content"], ReadContent(*c, absl::StrCat(where, ".content")));
    }
    messages.push_back(std::move(copy));
  }
  return messages;
}

const absl::flat_hash_set<std::string_view>& CommonFields() {
  static const auto* const kFields = new absl::flat_hash_set<std::string_view>{
      "model", "temperature", "top_p", "min_p", "top_k", "repetition_penalty", "presence_penalty",
      "frequency_penalty", "seed", "max_tokens", "ignore_eos", "stop", "stop_token_ids", "priority", "n",
      "best_of", "stream", "stream_options", "logit_bias", "suffix", "tools", "tool_choice", "functions",
      "function_call", "response_format", "modalities", "skip_special_tokens", "include_stop_str_in_output",
      "min_tokens", "logprobs"};
  return *kFields;
}

}  // namespace

absl::StatusOr<ParsedRequest> ParseCompletionRequest(std::string_view text) {
  ASSIGN_OR_RETURN(Json body, ParseBody(text));
  absl::flat_hash_set<std::string_view> known = CommonFields();
  known.insert({"prompt", "echo"});
  RETURN_IF_ERROR(CheckKnownFields(body, known));
  ParsedRequest r;
  RETURN_IF_ERROR(ReadCommon(body, &r));
  ASSIGN_OR_RETURN(r.prompts, ReadPrompts(body));
  RETURN_IF_ERROR(ReadBool(body, "echo", &r.echo));
  int64_t k = 0;
  bool present = false;
  RETURN_IF_ERROR(ReadInt(body, "logprobs", 0, 20, &k, &present));
  if (present) r.top_logprobs = static_cast<uint32_t>(k);
  // The engine has no prompt logprobs, which echo with logprobs would list.
  if (r.echo && r.top_logprobs) return Invalid("echo", "echo together with logprobs is not supported");
  if (r.prompts.size() * r.n > kMaxChoices) {
    return Invalid("n", absl::StrCat(r.prompts.size(), " prompts x n = ", r.prompts.size() * r.n,
                                     " completions; at most ", kMaxChoices));
  }
  if (r.top_logprobs) r.sampling.set_logprobs(std::max<uint32_t>(*r.top_logprobs, 1));
  return r;
}

absl::StatusOr<ParsedRequest> ParseChatRequest(std::string_view text) {
  ASSIGN_OR_RETURN(Json body, ParseBody(text));
  absl::flat_hash_set<std::string_view> known = CommonFields();
  known.insert({"messages", "max_completion_tokens", "top_logprobs", "add_generation_prompt"});
  RETURN_IF_ERROR(CheckKnownFields(body, known));
  ParsedRequest r;
  RETURN_IF_ERROR(ReadCommon(body, &r));
  int64_t i = 0;
  bool present = false;
  RETURN_IF_ERROR(ReadInt(body, "max_completion_tokens", 1, std::numeric_limits<uint32_t>::max(), &i, &present));
  if (present) r.sampling.set_max_tokens(static_cast<uint32_t>(i));  // the newer name wins
  ASSIGN_OR_RETURN(r.messages, ReadMessages(body));
  RETURN_IF_ERROR(ReadBool(body, "add_generation_prompt", &r.add_generation_prompt));
  bool logprobs = false;
  RETURN_IF_ERROR(ReadBool(body, "logprobs", &logprobs));
  RETURN_IF_ERROR(ReadInt(body, "top_logprobs", 0, 20, &i, &present));
  if (present && !logprobs) return Invalid("top_logprobs", "needs logprobs: true");
  if (logprobs) r.top_logprobs = present ? static_cast<uint32_t>(i) : 0;
  if (r.top_logprobs) r.sampling.set_logprobs(std::max<uint32_t>(*r.top_logprobs, 1));
  return r;
}

std::string ErrorParam(absl::string_view message) {
  const size_t colon = message.find(": ");
  if (colon == absl::string_view::npos || colon == 0) return "";
  absl::string_view name = message.substr(0, colon);
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '.' || c == '[' || c == ']';
    if (!ok) return "";
  }
  if (name.substr(0, 9) == "sampling.") name.remove_prefix(9);
  if (name.substr(0, 16) == "prompt_token_ids") return "prompt";
  if (name == "body" || name == "request") return "";
  return std::string(name);
}

std::string ErrorMessage(absl::string_view message) {
  const std::string param = ErrorParam(message);
  const size_t colon = message.find(": ");
  if (param.empty() || colon == absl::string_view::npos) return std::string(message);
  absl::string_view name = message.substr(0, colon);
  if (name.substr(0, 9) == "sampling.") return absl::StrCat(name.substr(9), message.substr(colon));
  return std::string(message);
}

}  // namespace tandem::openai
