#include "router/openai/openai_service.h"

#include <ctime>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "router/generation_service.h"
#include "router/openai/openai_call.h"
#include "router/openai/openai_request.h"
#include "router/openai/openai_response.h"
#include "tandem/v1/generation.pb.h"

namespace tandem::openai {
namespace {

constexpr char kJson[] = "application/json";

absl::string_view AuthorizationOf(const http::Request& request) {
  const std::string_view v = request.Header("authorization");
  return absl::string_view(v.data(), v.size());
}

std::string ModelObject(const std::string& name, int64_t created, int64_t max_model_len) {
  return Json{{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "tandem"},
              {"max_model_len", max_model_len}}
      .dump();
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiService>> OpenAiService::Create(
    RequestValidator validator, const Tokenizer* tokenizer, std::optional<ChatTemplate> chat_template,
    GenerationBackend* backend, RequestMetrics* metrics, DrainGate* gate, const ApiKeyAuth* auth,
    metrics::Registry* registry, ServiceOptions options) {
  std::unique_ptr<OpenAiService> s(new OpenAiService(std::move(validator), tokenizer, std::move(chat_template),
                                                     backend, metrics, gate, auth, std::move(options)));
  if (registry != nullptr) {
    absl::StatusOr<prometheus::Family<prometheus::Counter>*> f = registry->AddCounter(
        "tandem_http_requests_total", "Requests of the OpenAI HTTP API by endpoint and the HTTP status they ended with (499: the client left).");
    if (!f.ok()) return f.status();
    s->http_requests_ = *f;
  }
  return s;
}

OpenAiService::OpenAiService(RequestValidator validator, const Tokenizer* tokenizer,
                             std::optional<ChatTemplate> chat_template, GenerationBackend* backend,
                             RequestMetrics* metrics, DrainGate* gate, const ApiKeyAuth* auth, ServiceOptions options)
    : validator_(std::move(validator)),
      tokenizer_(tokenizer),
      chat_template_(std::move(chat_template)),
      backend_(backend),
      metrics_(metrics),
      gate_(gate),
      auth_(auth),
      options_(std::move(options)),
      created_(static_cast<int64_t>(std::time(nullptr))),
      instance_(GenerationService::NewInstanceTag()) {}

void OpenAiService::Count(const std::string& endpoint, int http_status) {
  if (http_requests_ == nullptr) return;
  const std::string key = absl::StrCat(endpoint, " ", http_status);
  prometheus::Counter* c = nullptr;
  {
    std::lock_guard<std::mutex> lock(counters_mu_);
    auto it = counters_.find(key);
    if (it == counters_.end()) {
      metrics::Labels labels = options_.metric_labels;
      labels["endpoint"] = endpoint;
      labels["code"] = std::to_string(http_status);
      absl::StatusOr<prometheus::Counter*> child = metrics::AddChild(http_requests_, labels);
      if (!child.ok()) return;
      it = counters_.emplace(key, *child).first;
    }
    c = it->second;
  }
  c->Increment();
}

void OpenAiService::Fail(const std::string& endpoint, const absl::Status& status,
                         const std::shared_ptr<http::Responder>& responder, int64_t retry_after_ms) {
  http::Headers headers;
  if (retry_after_ms >= 0) headers.emplace_back("Retry-After", std::to_string((retry_after_ms + 999) / 1000));
  if (status.code() == absl::StatusCode::kUnauthenticated) headers.emplace_back("WWW-Authenticate", "Bearer");
  const int code = HttpStatus(status.code());
  responder->Respond(code, kJson, ErrorBody(status), std::move(headers));
  Count(endpoint, code);
}

void OpenAiService::Handle(http::Request request, std::shared_ptr<http::Responder> responder) {
  const std::string& path = request.path;
  const bool get = request.method == "GET" || request.method == "HEAD";
  auto wrong_method = [&](const char* allow, const std::string& endpoint) {
    http::Headers h{{"Allow", allow}};
    responder->Respond(405, kJson,
                       ErrorBody(absl::InvalidArgumentError(
                           absl::StrCat("method ", request.method, " is not allowed on ", path, " (", allow, ")"))),
                       std::move(h));
    Count(endpoint, 405);
  };
  if (path == "/health") {
    if (!get) return wrong_method("GET", "health");
    const bool ready = (!options_.ready || options_.ready()) && (gate_ == nullptr || !gate_->draining());
    if (ready) {
      responder->Respond(200, "text/plain", "");
    } else {
      responder->Respond(503, kJson, ErrorBody(absl::UnavailableError("no live prefill and decode worker, or draining")));
    }
    Count("health", ready ? 200 : 503);
    return;
  }
  const bool models = path == "/v1/models" || absl::StartsWith(path, "/v1/models/");
  const bool completions = path == "/v1/completions";
  const bool chat = path == "/v1/chat/completions";
  if (!models && !completions && !chat) {
    return Fail("other", absl::NotFoundError(absl::StrCat("no route ", path)), responder);
  }
  const std::string endpoint = models ? "models" : completions ? "completions" : "chat_completions";
  if (models && !get) return wrong_method("GET", endpoint);
  if (!models && request.method != "POST") return wrong_method("POST", endpoint);
  if (models) {
    if (auth_ != nullptr) {
      absl::StatusOr<std::shared_ptr<ApiKeyAuth::Key>> key = auth_->Authenticate(AuthorizationOf(request));
      if (!key.ok()) return Fail(endpoint, key.status(), responder);
    }
    const std::string only = path.size() > 11 ? path.substr(11) : "";
    return ListModels(only, std::move(responder));
  }
  Generate(chat, request, std::move(responder));
}

void OpenAiService::ListModels(const std::string& only, std::shared_ptr<http::Responder> responder) {
  const std::string model = ModelObject(options_.model_name, created_, options_.max_model_len);
  if (only.empty()) {
    responder->Respond(200, kJson, absl::StrCat(R"({"object":"list","data":[)", model, "]}"));
  } else if (only == options_.model_name) {
    responder->Respond(200, kJson, model);
  } else {
    return Fail("models", absl::NotFoundError(absl::StrCat("model: '", only, "' does not exist (this server serves '",
                                                           options_.model_name, "')")),
                responder);
  }
  Count("models", 200);
}

void OpenAiService::Generate(bool chat, const http::Request& request, std::shared_ptr<http::Responder> responder) {
  const std::string endpoint = chat ? "chat_completions" : "completions";
  auto refuse = [&](const absl::Status& st, int64_t retry_after_ms = -1) {
    if (metrics_ != nullptr) metrics_->CountRefused(st.code());
    Fail(endpoint, st, responder, retry_after_ms);
  };
  std::shared_ptr<ApiKeyAuth::Key> key;
  if (auth_ != nullptr) {
    absl::StatusOr<std::shared_ptr<ApiKeyAuth::Key>> k = auth_->Authenticate(AuthorizationOf(request));
    if (!k.ok()) return refuse(k.status());
    key = *std::move(k);
  }
  std::shared_ptr<DrainGate::Ticket> ticket;
  if (gate_ != nullptr && (ticket = gate_->Enter()) == nullptr) {
    return refuse(absl::UnavailableError("the server is shutting down"));
  }
  absl::StatusOr<ParsedRequest> parsed = chat ? ParseChatRequest(request.body) : ParseCompletionRequest(request.body);
  if (!parsed.ok()) return refuse(parsed.status());
  if (!parsed->model.empty() && parsed->model != options_.model_name) {
    return refuse(absl::NotFoundError(absl::StrCat("model: '", parsed->model,
                                                   "' does not exist (this server serves '", options_.model_name,
                                                   "')")));
  }
  const uint64_t n = next_id_.fetch_add(1);
  // The requests in the gRPC API's terms, one per prompt.
  std::vector<v1::GenerateRequest> prompts;
  std::vector<std::string> echo_texts;
  v1::GenerateRequest base;
  base.set_request_id(std::string(request.Header("x-request-id")));
  *base.mutable_sampling() = parsed->sampling;
  base.set_priority(parsed->priority);
  if (chat) {
    if (!chat_template_) {
      return refuse(absl::InvalidArgumentError(
          "messages: this model has no chat template (tokenizer_config.json); start the server with "
          "--chat-template FILE, or use /v1/completions"));
    }
    if (tokenizer_ == nullptr) return refuse(absl::InvalidArgumentError("messages: this model has no tokenizer"));
    absl::StatusOr<std::string> text = chat_template_->Render(parsed->messages, parsed->add_generation_prompt);
    if (!text.ok()) return refuse(absl::InvalidArgumentError(absl::StrCat("messages: ", text.status().message())));
    // The template wrote the special tokens (BOS) itself.
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->TryEncode(*text, /*add_special_tokens=*/false);
    if (!ids.ok()) return refuse(absl::InvalidArgumentError(absl::StrCat("messages: ", ids.status().message())));
    for (int32_t id : *ids) base.add_prompt_token_ids(static_cast<uint32_t>(id));
    if (base.sampling().max_tokens() == 0) {
      // Chat's default: the rest of the context (OpenAI's and vLLM's).
      const int64_t rest = options_.max_model_len - static_cast<int64_t>(ids->size());
      base.mutable_sampling()->set_max_tokens(static_cast<uint32_t>(std::max<int64_t>(rest, 1)));
    }
    prompts.push_back(std::move(base));
    echo_texts.emplace_back();
  } else {
    for (const Prompt& p : parsed->prompts) {
      v1::GenerateRequest r = base;
      if (p.token_ids.empty()) {
        r.set_prompt(p.text);
      } else {
        for (uint32_t id : p.token_ids) r.add_prompt_token_ids(id);
      }
      std::string echo;
      if (parsed->echo) {
        if (!p.token_ids.empty() && tokenizer_ != nullptr) {
          std::vector<int32_t> ids(p.token_ids.begin(), p.token_ids.end());
          echo = tokenizer_->Decode(ids);
        } else {
          echo = p.text;
        }
      }
      prompts.push_back(std::move(r));
      echo_texts.push_back(std::move(echo));
    }
  }
  // Every choice validated before any starts: a 400 leaves nothing running.
  CallOptions options;
  std::vector<ValidatedRequest> requests;
  int64_t charge = 0;
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (uint32_t j = 0; j < parsed->n; ++j) {
      v1::GenerateRequest r = prompts[p];
      // n seeded choices must still differ: choice j draws from seed + j.
      if (j > 0 && r.sampling().has_seed()) r.mutable_sampling()->set_seed(r.sampling().seed() + j);
      absl::StatusOr<ValidatedRequest> v = validator_.Validate(r, absl::StrCat(chat ? "chatcmpl-" : "cmpl-", n));
      if (!v.ok()) return refuse(v.status());
      const auto prompt_tokens = static_cast<uint32_t>(v->prompt_token_ids.size());
      if (j == 0) options.usage_prompt_tokens += prompt_tokens;
      charge += int64_t{prompt_tokens} + v->sampling.max_tokens;
      options.backend_ids.push_back(
          absl::StrCat(v->request_id, "#", instance_, "-h", n, "-", options.backend_ids.size()));
      options.prompt_tokens.push_back(prompt_tokens);
      options.echo.push_back(echo_texts[p]);
      requests.push_back(*std::move(v));
    }
  }
  // The key's limits, charged prompt + max_tokens of every choice; what was
  // used is settled when the call ends.
  std::shared_ptr<std::unique_ptr<ApiKeyAuth::Lease>> lease;
  if (key != nullptr) {
    int64_t retry_after_ms = -1;
    absl::StatusOr<std::unique_ptr<ApiKeyAuth::Lease>> l = auth_->Admit(key, charge, &retry_after_ms);
    if (!l.ok()) return refuse(l.status(), retry_after_ms);
    lease = std::make_shared<std::unique_ptr<ApiKeyAuth::Lease>>(*std::move(l));
  }
  options.header.endpoint = chat ? Endpoint::kChatCompletions : Endpoint::kCompletions;
  options.header.id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", instance_, "-", n);
  options.header.created = static_cast<int64_t>(std::time(nullptr));
  options.header.model = options_.model_name;
  options.stream = parsed->stream;
  options.include_usage = parsed->include_usage;
  options.logprobs.top = parsed->top_logprobs;
  options.logprobs.tokenizer = tokenizer_;
  options.on_end = [this, endpoint](int http_status) { Count(endpoint, http_status); };
  options.on_used = [lease](int64_t used) {
    if (lease == nullptr || *lease == nullptr) return;
    if (used >= 0) (*lease)->SetUsed(used);
    lease->reset();  // the key's slot is free before the client sees the end
  };
  auto call = std::make_shared<OpenAiCall>(std::move(options), std::move(responder), backend_, metrics_,
                                           std::static_pointer_cast<void>(ticket));
  call->Start(std::move(requests));
}

}  // namespace tandem::openai
