// Fuzz target: the OpenAI HTTP API's request bodies (router/openai/
// openai_request.h), then the router's RequestValidator on what they
// become, and the error object a refusal is answered with. Input: one byte
// (even: /v1/completions, odd: /v1/chat/completions), then the body.
// Asserts: no crash; a refusal is INVALID_ARGUMENT with a message, and its
// error body is a JSON object whose error.param is null or a non-empty
// string; an accepted request has 1 <= n, prompts x n <= kMaxChoices, every
// prompt non-empty (text or ids), a chat request's messages a non-empty
// array of objects with a string role and string-or-null content; the
// validator on each prompt (bundled model) answers OK or INVALID_ARGUMENT.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "fuzz/fuzz_util.h"
#include "router/openai/openai_request.h"
#include "router/openai/openai_response.h"
#include "router/request_validator.h"
#include "tandem/v1/generation.pb.h"

namespace {

struct Model {
  tandem::ModelConfig config;
  std::unique_ptr<tandem::Tokenizer> tokenizer;
};

const Model& Bundled() {
  static const Model* const model = [] {
    auto* m = new Model;
    m->config = *tandem::LoadModelConfig(tandem::fuzz::BundledModelDir());
    m->tokenizer = *tandem::Tokenizer::Load(tandem::fuzz::BundledModelDir());
    return m;
  }();
  return *model;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tandem::openai;
  if (size == 0) return 0;
  const bool chat = (data[0] & 1) != 0;
  const std::string_view body = tandem::fuzz::AsView(data + 1, size - 1);
  absl::StatusOr<ParsedRequest> r = chat ? ParseChatRequest(body) : ParseCompletionRequest(body);
  if (!r.ok()) {
    FUZZ_CHECK(r.status().code() == absl::StatusCode::kInvalidArgument, std::string(body));
    FUZZ_CHECK(!r.status().message().empty(), std::string(body));
    const Json err = Json::parse(ErrorBody(r.status()), nullptr, false);
    FUZZ_CHECK(err.is_object() && err.contains("error"), std::string(body));
    const Json& param = err["error"]["param"];
    FUZZ_CHECK(param.is_null() || (param.is_string() && !param.get<std::string>().empty()), std::string(body));
    return 0;
  }
  FUZZ_CHECK(r->n >= 1, std::string(body));
  if (chat) {
    FUZZ_CHECK(r->prompts.empty(), std::string(body));
    FUZZ_CHECK(r->messages.is_array() && !r->messages.empty(), std::string(body));
    for (const Json& m : r->messages) {
      FUZZ_CHECK(m.is_object() && m["role"].is_string(), std::string(body));
      FUZZ_CHECK(!m.contains("content") || m["content"].is_null() || m["content"].is_string(), std::string(body));
    }
  } else {
    FUZZ_CHECK(!r->prompts.empty() && r->prompts.size() * r->n <= kMaxChoices, std::string(body));
  }
  if (r->top_logprobs) FUZZ_CHECK(r->sampling.logprobs() >= 1 && r->sampling.logprobs() <= 20, std::string(body));
  const Model& model = Bundled();
  const tandem::RequestValidator validator(model.config, model.tokenizer.get());
  for (const Prompt& p : r->prompts) {
    tandem::v1::GenerateRequest g;
    *g.mutable_sampling() = r->sampling;
    if (p.token_ids.empty()) {
      g.set_prompt(p.text);
    } else {
      for (uint32_t id : p.token_ids) g.add_prompt_token_ids(id);
    }
    absl::StatusOr<tandem::ValidatedRequest> v = validator.Validate(g, "fuzz");
    FUZZ_CHECK(v.ok() || v.status().code() == absl::StatusCode::kInvalidArgument, std::string(body));
  }
  return 0;
}
