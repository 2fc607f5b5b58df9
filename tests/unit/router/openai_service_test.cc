// OpenAiService and OpenAiCall without a network: requests go in through
// Handle() with a recording Responder, and a scripted GenerationBackend
// plays the engine (the test feeds each backend request's chunks). Checks
// the exact bytes and objects the client gets (whole and streamed, n > 1,
// echo, logprobs, usage), what reaches the backend (token ids, seeds,
// cancellations), and the error statuses, on the bundled model's real
// tokenizer and chat template.
#include "router/openai/openai_service.h"

#include <map>
#include <mutex>

#include "common/cli/model_path.h"
#include "gtest/gtest.h"
#include "router/openai/openai_response.h"
#include "tandem/v1/generation.pb.h"

namespace tandem::openai {
namespace {

class RecordingResponder final : public http::Responder {
 public:
  void Respond(int status, std::string content_type, std::string body, http::Headers headers) override {
    std::lock_guard<std::mutex> lock(mu);
    ++replies;
    this->status = status;
    this->content_type = std::move(content_type);
    this->body = std::move(body);
    this->headers = std::move(headers);
    complete = true;
  }
  void StartStream(int status, std::string content_type, http::Headers headers) override {
    std::lock_guard<std::mutex> lock(mu);
    ++replies;
    this->status = status;
    this->content_type = std::move(content_type);
    this->headers = std::move(headers);
    streaming = true;
  }
  void Write(std::string data) override {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(streaming && !complete) << "write outside a stream";
    events.push_back(std::move(data));
  }
  void End() override {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(streaming && !complete);
    complete = true;
  }
  void OnClientGone(std::function<void()> f) override { on_gone = std::move(f); }
  bool client_gone() const override { return false; }

  std::string Header(const std::string& name) const {
    for (const auto& [k, v] : headers) {
      if (k == name) return v;
    }
    return "";
  }
  Json BodyJson() const { return Json::parse(body); }
  // The streamed events' JSON ("data: X\n\n" -> X), [DONE] as the string.
  std::vector<Json> EventJson() const {
    std::vector<Json> out;
    for (const std::string& e : events) {
      EXPECT_EQ(e.substr(0, 6), "data: ");
      EXPECT_EQ(e.substr(e.size() - 2), "\n\n");
      const std::string payload = e.substr(6, e.size() - 8);
      out.push_back(payload == "[DONE]" ? Json("[DONE]") : Json::parse(payload));
    }
    return out;
  }

  std::mutex mu;
  int replies = 0;
  int status = 0;
  std::string content_type, body;
  http::Headers headers;
  bool streaming = false, complete = false;
  std::vector<std::string> events;
  std::function<void()> on_gone;
};

class ScriptedBackend final : public GenerationBackend {
 public:
  void Start(const std::string& id, ValidatedRequest request, Sink sink) override {
    std::lock_guard<std::mutex> lock(mu_);
    order.push_back(id);
    requests[id] = std::move(request);
    sinks[id] = std::move(sink);
  }
  void Cancel(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled.push_back(id);
  }
  // Feeds request `k` (in start order) a chunk.
  void Chunk(size_t k, std::string text, std::vector<int32_t> ids, ChunkFinish finish = ChunkFinish::kNone,
             std::vector<SampledToken> logprobs = {}) {
    Sink sink;
    {
      std::lock_guard<std::mutex> lock(mu_);
      sink = sinks.at(order.at(k));
    }
    GenerationChunk c;
    c.text = std::move(text);
    c.token_ids = std::move(ids);
    c.finish = finish;
    c.logprobs = std::move(logprobs);
    sink(absl::OkStatus(), std::move(c));
  }
  void Fail(size_t k, absl::Status st) {
    Sink sink;
    {
      std::lock_guard<std::mutex> lock(mu_);
      sink = sinks.at(order.at(k));
    }
    sink(st, GenerationChunk{});
  }
  const ValidatedRequest& Request(size_t k) { return requests.at(order.at(k)); }

  std::mutex mu_;
  std::vector<std::string> order;
  std::map<std::string, ValidatedRequest> requests;
  std::map<std::string, Sink> sinks;
  std::vector<std::string> cancelled;
};

class OpenAiServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::filesystem::path dir = cli::DefaultModelDir();
    absl::StatusOr<ModelConfig> c = LoadModelConfig(dir);
    ASSERT_TRUE(c.ok()) << c.status();
    config_ = *c;
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(dir);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = *std::move(t);
    absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::FromModelDir(dir);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    chat_template_ = *tmpl;
    service_ = MakeService(chat_template_, nullptr);
  }

  std::unique_ptr<OpenAiService> MakeService(std::optional<ChatTemplate> tmpl, const ApiKeyAuth* auth,
                                             std::function<bool()> ready = nullptr) {
    ServiceOptions o;
    o.model_name = "shakespeare";
    o.max_model_len = config_.max_position_embeddings;
    o.ready = std::move(ready);
    absl::StatusOr<std::unique_ptr<OpenAiService>> s =
        OpenAiService::Create(RequestValidator(config_, tokenizer_.get()), tokenizer_.get(), std::move(tmpl),
                              &backend_, nullptr, nullptr, auth, nullptr, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }

  std::shared_ptr<RecordingResponder> Call(const std::string& method, const std::string& path, const std::string& body,
                                           OpenAiService* service = nullptr,
                                           http::Headers headers = {}) {
    http::Request r;
    r.method = method;
    r.target = path;
    r.path = path;
    r.body = body;
    r.headers = std::move(headers);
    auto w = std::make_shared<RecordingResponder>();
    (service != nullptr ? service : service_.get())->Handle(std::move(r), w);
    return w;
  }
  std::shared_ptr<RecordingResponder> Post(const std::string& path, const std::string& body) {
    return Call("POST", path, body);
  }

  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::optional<ChatTemplate> chat_template_;
  ScriptedBackend backend_;
  std::unique_ptr<OpenAiService> service_;
};

TEST_F(OpenAiServiceTest, WholeCompletion) {
  auto w = Post("/v1/completions", R"({"model": "shakespeare", "prompt": "ROMEO:", "max_tokens": 3, "temperature": 0})");
  ASSERT_EQ(backend_.order.size(), 1u);
  const ValidatedRequest& r = backend_.Request(0);
  EXPECT_EQ(r.prompt_token_ids, tokenizer_->Encode("ROMEO:"));  // with BOS, as gRPC's prompt
  EXPECT_EQ(r.sampling.max_tokens, 3u);
  EXPECT_TRUE(r.sampling.greedy());
  EXPECT_EQ(w->replies, 0);  // nothing until the backend finishes
  backend_.Chunk(0, "Hi", {10});
  backend_.Chunk(0, " there", {11, 12}, ChunkFinish::kLength);
  ASSERT_EQ(w->replies, 1);
  EXPECT_EQ(w->status, 200);
  EXPECT_EQ(w->content_type, "application/json");
  const Json j = w->BodyJson();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "shakespeare");
  EXPECT_EQ(j["id"].get<std::string>().substr(0, 5), "cmpl-");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["text"], "Hi there");
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], r.prompt_token_ids.size());
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["usage"]["total_tokens"], r.prompt_token_ids.size() + 3);
  EXPECT_TRUE(backend_.cancelled.empty());
}

TEST_F(OpenAiServiceTest, StreamedChatWithUsage) {
  auto w = Post("/v1/chat/completions",
                R"({"messages": [{"role": "user", "content": "Speak."}], "max_tokens": 2, "stream": true,
                    "stream_options": {"include_usage": true}})");
  ASSERT_EQ(backend_.order.size(), 1u);
  // The prompt is the template's rendering, encoded without a second BOS.
  absl::StatusOr<std::string> text = chat_template_->Render(Json::parse(R"([{"role": "user", "content": "Speak."}])"), true);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(backend_.Request(0).prompt_token_ids, tokenizer_->Encode(*text, false));
  EXPECT_EQ(w->status, 200);
  EXPECT_EQ(w->content_type, "text/event-stream");
  backend_.Chunk(0, "A", {7});
  backend_.Chunk(0, "", {8}, ChunkFinish::kStop);
  ASSERT_TRUE(w->complete);
  const std::vector<Json> ev = w->EventJson();
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_EQ(ev[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(ev[0]["choices"][0]["delta"], Json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_TRUE(ev[0]["usage"].is_null());
  EXPECT_TRUE(ev[0].contains("usage"));
  EXPECT_EQ(ev[1]["choices"][0]["delta"], Json::parse(R"({"content": "A"})"));
  EXPECT_TRUE(ev[1]["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(ev[2]["choices"][0]["delta"], Json::object());
  EXPECT_EQ(ev[2]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(ev[3]["choices"], Json::array());
  EXPECT_EQ(ev[3]["usage"]["completion_tokens"], 2);
  EXPECT_EQ(ev[3]["usage"]["prompt_tokens"], backend_.Request(0).prompt_token_ids.size());
  EXPECT_EQ(ev[4], "[DONE]");
  for (size_t i = 1; i < 4; ++i) EXPECT_EQ(ev[i]["id"], ev[0]["id"]);
}

TEST_F(OpenAiServiceTest, ChatDefaultMaxTokensFillsTheContext) {
  Post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "Speak."}]})");
  ASSERT_EQ(backend_.order.size(), 1u);
  const ValidatedRequest& r = backend_.Request(0);
  EXPECT_EQ(r.sampling.max_tokens + r.prompt_token_ids.size(), static_cast<size_t>(config_.max_position_embeddings));
}

TEST_F(OpenAiServiceTest, SeveralPromptsTimesNChoicesInOrder) {
  auto w = Post("/v1/completions", R"({"prompt": ["a", [5, 6]], "n": 2, "seed": 7, "max_tokens": 1})");
  ASSERT_EQ(backend_.order.size(), 4u);
  EXPECT_EQ(*backend_.Request(0).sampling.seed, 7u);
  EXPECT_EQ(*backend_.Request(1).sampling.seed, 8u);  // choice j draws from seed + j
  EXPECT_EQ(*backend_.Request(2).sampling.seed, 7u);
  EXPECT_EQ(backend_.Request(2).prompt_token_ids, (std::vector<int32_t>{5, 6}));
  std::set<std::string> ids(backend_.order.begin(), backend_.order.end());
  EXPECT_EQ(ids.size(), 4u);
  for (size_t k : {3, 1, 0, 2}) backend_.Chunk(k, "t" + std::to_string(k), {1}, ChunkFinish::kLength);
  const Json j = w->BodyJson();
  ASSERT_EQ(j["choices"].size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(j["choices"][k]["index"], k);
    EXPECT_EQ(j["choices"][k]["text"], "t" + std::to_string(k));
  }
  // Each prompt's tokens once, every choice's output.
  EXPECT_EQ(j["usage"]["prompt_tokens"], backend_.Request(0).prompt_token_ids.size() + 2);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
}

TEST_F(OpenAiServiceTest, EchoAndLogprobs) {
  auto w = Post("/v1/completions", R"({"prompt": "ROMEO:", "echo": true, "max_tokens": 1})");
  backend_.Chunk(0, " I", {1}, ChunkFinish::kLength);
  EXPECT_EQ(w->BodyJson()["choices"][0]["text"], "ROMEO: I");

  const std::vector<int32_t> ids = tokenizer_->Encode("ROMEO: I", false);
  ASSERT_GE(ids.size(), 2u);
  auto token = [&](int32_t id) { return tokenizer_->Decode(std::vector<int32_t>{id}, false); };
  auto s = Post("/v1/completions", R"({"prompt": "x", "logprobs": 1, "max_tokens": 2, "stream": true})");
  EXPECT_EQ(backend_.Request(1).sampling.logprobs, 1u);
  std::vector<SampledToken> lp = {{ids[0], -0.5f, {{ids[0], -0.5f}, {ids[1], -1.5f}}}};
  backend_.Chunk(1, token(ids[0]), {ids[0]}, ChunkFinish::kNone, lp);
  std::vector<SampledToken> lp2 = {{ids[1], -std::numeric_limits<float>::infinity(), {{ids[0], -0.25f}}}};
  backend_.Chunk(1, token(ids[1]), {ids[1]}, ChunkFinish::kLength, lp2);
  const std::vector<Json> ev = s->EventJson();
  ASSERT_EQ(ev.size(), 3u);
  const Json& l0 = ev[0]["choices"][0]["logprobs"];
  EXPECT_EQ(l0["tokens"], Json::array({token(ids[0])}));
  EXPECT_EQ(l0["token_logprobs"], Json::array({-0.5}));
  EXPECT_EQ(l0["top_logprobs"], Json::parse(absl::StrCat(R"([{")", token(ids[0]), R"(": -0.5}])")));  // top 1 of 2
  EXPECT_EQ(l0["text_offset"], Json::array({0}));
  const Json& l1 = ev[1]["choices"][0]["logprobs"];
  EXPECT_EQ(l1["token_logprobs"], Json::array({-9999.0}));  // -inf has no JSON
  EXPECT_EQ(l1["text_offset"], Json::array({token(ids[0]).size()}));
  EXPECT_EQ(ev[1]["choices"][0]["finish_reason"], "length");
}

TEST_F(OpenAiServiceTest, ChatLogprobsShape) {
  auto w = Post("/v1/chat/completions",
                R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 1, "max_tokens": 1})");
  const int32_t id = tokenizer_->Encode("A", false).at(0);
  backend_.Chunk(0, "A", {id}, ChunkFinish::kLength, {{id, -0.125f, {{id, -0.125f}}}});
  const Json j = w->BodyJson();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"], Json::parse(R"({"role": "assistant", "content": "A"})"));
  EXPECT_EQ(j["choices"][0]["logprobs"],
            Json::parse(R"({"content": [{"token": "A", "logprob": -0.125, "bytes": [65],
                             "top_logprobs": [{"token": "A", "logprob": -0.125, "bytes": [65]}]}]})"));
}

TEST_F(OpenAiServiceTest, RefusalsBeforeAnyWork) {
  auto bad = Post("/v1/completions", R"({"prompt": [1, 999999]})");
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(bad->BodyJson()["error"]["param"], "prompt");
  EXPECT_EQ(bad->BodyJson()["error"]["type"], "invalid_request_error");
  EXPECT_EQ(bad->BodyJson()["error"]["code"], 400);
  auto top_p = Post("/v1/completions", R"({"prompt": "x", "top_p": 1.5})");
  EXPECT_EQ(top_p->status, 400);
  EXPECT_EQ(top_p->BodyJson()["error"]["param"], "top_p");
  EXPECT_EQ(top_p->BodyJson()["error"]["message"], "top_p: 1.5 must be in (0, 1]");
  auto model = Post("/v1/completions", R"({"prompt": "x", "model": "gpt-4"})");
  EXPECT_EQ(model->status, 404);
  EXPECT_EQ(model->BodyJson()["error"]["message"],
            "model: 'gpt-4' does not exist (this server serves 'shakespeare')");
  auto context = Post("/v1/completions", R"({"prompt": "x", "max_tokens": 100000})");
  EXPECT_EQ(context->status, 400);
  EXPECT_EQ(context->BodyJson()["error"]["param"], "max_tokens");
  // n x prompts: one bad prompt refuses the whole request.
  auto partial = Post("/v1/completions", R"({"prompt": [[1], [999999]], "n": 2})");
  EXPECT_EQ(partial->status, 400);
  EXPECT_TRUE(backend_.order.empty());

  auto no_template = MakeService(std::nullopt, nullptr);
  auto chat = Call("POST", "/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}]})",
                   no_template.get());
  EXPECT_EQ(chat->status, 400);
  EXPECT_EQ(chat->BodyJson()["error"]["param"], "messages");
  EXPECT_TRUE(backend_.order.empty());
}

TEST_F(OpenAiServiceTest, RoutesMethodsHealthModels) {
  auto models = Call("GET", "/v1/models", "");
  EXPECT_EQ(models->status, 200);
  const Json m = models->BodyJson();
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "shakespeare");
  EXPECT_EQ(m["data"][0]["object"], "model");
  EXPECT_EQ(m["data"][0]["max_model_len"], config_.max_position_embeddings);
  EXPECT_EQ(Call("GET", "/v1/models/shakespeare", "")->BodyJson()["id"], "shakespeare");
  EXPECT_EQ(Call("GET", "/v1/models/other", "")->status, 404);
  auto get = Call("GET", "/v1/completions", "");
  EXPECT_EQ(get->status, 405);
  EXPECT_EQ(get->Header("Allow"), "POST");
  EXPECT_EQ(Call("POST", "/v1/models", "")->status, 405);
  EXPECT_EQ(Call("GET", "/v2/whatever", "")->status, 404);
  EXPECT_EQ(Call("GET", "/health", "")->status, 200);
  bool ready = false;
  auto gated = MakeService(chat_template_, nullptr, [&ready] { return ready; });
  EXPECT_EQ(Call("GET", "/health", "", gated.get())->status, 503);
  ready = true;
  EXPECT_EQ(Call("GET", "/health", "", gated.get())->status, 200);
}

TEST_F(OpenAiServiceTest, BackendFailureCancelsTheOtherChoices) {
  auto w = Post("/v1/completions", R"({"prompt": "x", "n": 3})");
  backend_.Chunk(0, "a", {1}, ChunkFinish::kLength);
  backend_.Fail(1, absl::InternalError("worker lost the request"));
  EXPECT_EQ(w->status, 503);  // what the gRPC API says too: UNAVAILABLE
  EXPECT_EQ(w->BodyJson()["error"]["type"], "service_unavailable_error");
  // Choice 0 had finished; 1 failed and 2 still ran: both are cancelled.
  EXPECT_EQ(backend_.cancelled, (std::vector<std::string>{backend_.order[1], backend_.order[2]}));
  backend_.Chunk(2, "late", {1}, ChunkFinish::kLength);  // dropped
  EXPECT_EQ(w->replies, 1);

  auto s = Post("/v1/completions", R"({"prompt": "x", "stream": true})");
  backend_.Chunk(3, "a", {1});
  backend_.Fail(3, absl::ResourceExhaustedError("queue full"));
  const std::vector<Json> ev = s->EventJson();
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[1]["error"]["code"], 429);
  EXPECT_EQ(ev[1]["error"]["message"], "queue full");
  EXPECT_EQ(ev[2], "[DONE]");
  EXPECT_TRUE(s->complete);

  auto busy = Post("/v1/completions", R"({"prompt": "x"})");
  backend_.Fail(4, absl::ResourceExhaustedError("queue full"));
  EXPECT_EQ(busy->status, 429);
  EXPECT_EQ(busy->Header("Retry-After"), "1");
}

TEST_F(OpenAiServiceTest, ClientGoneCancelsWhatRuns) {
  auto w = Post("/v1/completions", R"({"prompt": "x", "n": 2, "stream": true})");
  ASSERT_TRUE(w->on_gone);
  backend_.Chunk(0, "a", {1}, ChunkFinish::kLength);
  backend_.Chunk(1, "b", {1});
  const size_t events = w->events.size();
  w->on_gone();
  EXPECT_EQ(backend_.cancelled, (std::vector<std::string>{backend_.order[1]}));
  backend_.Chunk(1, "c", {2}, ChunkFinish::kLength);  // after the client left: dropped
  EXPECT_EQ(w->events.size(), events);
  w->on_gone();  // a second notice changes nothing
  EXPECT_EQ(backend_.cancelled.size(), 1u);
}

TEST_F(OpenAiServiceTest, ApiKeys) {
  absl::StatusOr<std::unique_ptr<ApiKeyAuth>> auth = ApiKeyAuth::FromText("sk-good name=a max_streams=1\n", {});
  ASSERT_TRUE(auth.ok());
  auto keyed = MakeService(chat_template_, auth->get());
  const std::string body = R"({"prompt": "x", "max_tokens": 1})";
  auto none = Call("POST", "/v1/completions", body, keyed.get());
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(none->BodyJson()["error"]["type"], "authentication_error");
  EXPECT_EQ(none->Header("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(Call("GET", "/v1/models", "", keyed.get())->status, 401);
  EXPECT_EQ(Call("GET", "/health", "", keyed.get())->status, 200);  // probes need no key
  const http::Headers good = {{"authorization", "Bearer sk-good"}};
  auto first = Call("POST", "/v1/completions", body, keyed.get(), good);
  ASSERT_EQ(backend_.order.size(), 1u);
  auto second = Call("POST", "/v1/completions", body, keyed.get(), good);  // max_streams=1
  EXPECT_EQ(second->status, 429);
  EXPECT_EQ(backend_.order.size(), 1u);
  backend_.Chunk(0, "a", {1}, ChunkFinish::kLength);
  EXPECT_EQ(first->status, 200);
  auto third = Call("POST", "/v1/completions", body, keyed.get(), good);  // the slot is free again
  EXPECT_EQ(backend_.order.size(), 2u);
  EXPECT_EQ(third->replies, 0);
}

}  // namespace
}  // namespace tandem::openai
