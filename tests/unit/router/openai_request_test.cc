// The OpenAI request bodies -> Tandem's request: every prompt form, each
// sampling field's mapping, the logprobs shapes, chat messages, and the
// refusals (types, unsupported and unknown parameters), each by name.
#include "router/openai/openai_request.h"

#include "gtest/gtest.h"

namespace tandem::openai {
namespace {

ParsedRequest Completion(const std::string& body) {
  absl::StatusOr<ParsedRequest> r = ParseCompletionRequest(body);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : ParsedRequest{};
}

std::string CompletionError(const std::string& body) {
  absl::StatusOr<ParsedRequest> r = ParseCompletionRequest(body);
  EXPECT_FALSE(r.ok()) << body;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

std::string ChatError(const std::string& body) {
  absl::StatusOr<ParsedRequest> r = ParseChatRequest(body);
  EXPECT_FALSE(r.ok()) << body;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

TEST(OpenAiRequestTest, PromptForms) {
  ParsedRequest r = Completion(R"({"prompt": "ROMEO:"})");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "ROMEO:");
  r = Completion(R"({"prompt": ["a", "b"]})");
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].text, "b");
  r = Completion(R"({"prompt": [1, 2, 3]})");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].token_ids, (std::vector<uint32_t>{1, 2, 3}));
  r = Completion(R"({"prompt": [[5], [6, 7]]})");
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[1].token_ids, (std::vector<uint32_t>{6, 7}));
  EXPECT_EQ(CompletionError(R"({})"), "prompt: required");
  EXPECT_EQ(CompletionError(R"({"prompt": []})").substr(0, 8), "prompt: ");
  EXPECT_EQ(CompletionError(R"({"prompt": [1, -2]})"), "prompt[1]: must be a token id (a non-negative integer)");
  EXPECT_EQ(CompletionError(R"({"prompt": [[1], []]})"), "prompt[1]: empty");
  EXPECT_EQ(CompletionError(R"({"prompt": ["a", 3]})"), "prompt[1]: must be a string or a list of token ids, not number");
}

TEST(OpenAiRequestTest, SamplingFieldsMapToTheGrpcRequest) {
  ParsedRequest r = Completion(
      R"({"model": "m", "prompt": "x", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
          "min_p": 0.05, "repetition_penalty": 1.1, "presence_penalty": 0.25, "frequency_penalty": -0.5,
          "seed": -1, "stop": ["\n", "END"], "stop_token_ids": [2], "ignore_eos": true, "n": 3, "best_of": 3,
          "priority": -4, "user": "u1", "logit_bias": {}, "suffix": null})");
  EXPECT_EQ(r.model, "m");
  const v1::SamplingParams& s = r.sampling;
  EXPECT_EQ(s.max_tokens(), 7u);
  EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(s.top_p(), 0.9f);
  EXPECT_EQ(s.top_k(), 40);
  EXPECT_FLOAT_EQ(s.min_p(), 0.05f);
  EXPECT_FLOAT_EQ(s.repetition_penalty(), 1.1f);
  EXPECT_FLOAT_EQ(s.presence_penalty(), 0.25f);
  EXPECT_FLOAT_EQ(s.frequency_penalty(), -0.5f);
  EXPECT_EQ(s.seed(), ~uint64_t{0});  // -1's bits
  ASSERT_EQ(s.stop_size(), 2);
  EXPECT_EQ(s.stop(1), "END");
  EXPECT_EQ(s.stop_token_ids(0), 2u);
  EXPECT_TRUE(s.ignore_eos());
  EXPECT_EQ(r.n, 3u);
  EXPECT_EQ(r.priority, -4);
  EXPECT_FALSE(r.top_logprobs.has_value());
  EXPECT_EQ(s.logprobs(), 0u);
  // Absent fields stay unset: the model's generation_config decides.
  r = Completion(R"({"prompt": "x", "temperature": null})");
  EXPECT_FALSE(r.sampling.has_temperature());
  EXPECT_FALSE(r.sampling.has_top_p());
  EXPECT_FALSE(r.sampling.has_seed());
  EXPECT_EQ(r.sampling.max_tokens(), 0u);
  r = Completion(R"({"prompt": "x", "stop": "###"})");
  ASSERT_EQ(r.sampling.stop_size(), 1);
  EXPECT_EQ(r.sampling.stop(0), "###");
}

TEST(OpenAiRequestTest, LogprobsShapes) {
  ParsedRequest r = Completion(R"({"prompt": "x", "logprobs": 0})");
  ASSERT_TRUE(r.top_logprobs.has_value());
  EXPECT_EQ(*r.top_logprobs, 0u);
  EXPECT_EQ(r.sampling.logprobs(), 1u);  // the chosen token's logprob comes with a top list
  r = Completion(R"({"prompt": "x", "logprobs": 5})");
  EXPECT_EQ(*r.top_logprobs, 5u);
  EXPECT_EQ(r.sampling.logprobs(), 5u);
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "logprobs": 21})"), "logprobs: 21 must be in [0, 20]");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "logprobs": true})"), "logprobs: must be an integer, not boolean");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "logprobs": 1, "echo": true})"),
            "echo: echo together with logprobs is not supported");

  absl::StatusOr<ParsedRequest> c =
      ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 3})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c->top_logprobs, 3u);
  EXPECT_EQ(c->sampling.logprobs(), 3u);
  c = ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": true})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c->top_logprobs, 0u);
  c = ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": false})");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->top_logprobs.has_value());
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2})"),
            "top_logprobs: needs logprobs: true");
}

TEST(OpenAiRequestTest, ChatMessages) {
  absl::StatusOr<ParsedRequest> c = ParseChatRequest(
      R"({"model": "m", "messages": [{"role": "system", "content": "be brief"},
          {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
          {"role": "assistant", "content": null, "name": "bot"}],
          "max_completion_tokens": 9, "max_tokens": 3, "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->messages.size(), 3u);
  EXPECT_EQ(c->messages[1]["content"], "a\nb");  // text parts joined
  EXPECT_TRUE(c->messages[2]["content"].is_null());
  EXPECT_EQ(c->messages[2]["name"], "bot");  // other keys reach the template
  EXPECT_EQ(c->sampling.max_tokens(), 9u);   // max_completion_tokens wins
  EXPECT_TRUE(c->stream);
  EXPECT_TRUE(c->include_usage);
  EXPECT_TRUE(c->add_generation_prompt);
  EXPECT_EQ(ChatError(R"({})"), "messages: required");
  EXPECT_EQ(ChatError(R"({"messages": []})"), "messages: must be a non-empty array of messages");
  EXPECT_EQ(ChatError(R"({"messages": [{"content": "x"}]})"), "messages[0].role: must be a non-empty string");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})"),
            "messages[0].content[0].type: 'image_url' is not supported (text parts only)");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": 5}]})"),
            "messages[0].content: must be a string or an array of content parts");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "x"}], "prompt": "y"})"),
            "prompt: unknown parameter (not supported by this server)");
}

TEST(OpenAiRequestTest, RefusalsNameTheParameter) {
  EXPECT_EQ(CompletionError("not json"), "body: not valid JSON");
  EXPECT_EQ(CompletionError("[1]"), "body: must be a JSON object, not array");
  EXPECT_EQ(CompletionError(std::string(40, '[') + std::string(40, ']')).substr(0, 19), "JSON nested deeper ");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "temperature": "hot"})"), "temperature: must be a number, not string");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "max_tokens": 0})"), "max_tokens: 0 must be in [1, 4294967295]");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "max_tokens": 1.5})"), "max_tokens: must be an integer, not number");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "n": 65})"), "n: 65 must be in [1, 64]");
  EXPECT_EQ(CompletionError(R"({"prompt": ["a","b","c"], "n": 30})"),
            "n: 3 prompts x n = 90 completions; at most 64");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "best_of": 2})"), "best_of: only best_of = n is supported");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "logit_bias": {"5": 1}})"), "logit_bias: not supported");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "suffix": "end"})"), "suffix: not supported");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "stop": [1]})"), "stop[0]: must be a string");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "stream_options": {"include_usage": true}})"),
            "stream_options: allowed only when stream is true");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "stream": true, "stream_options": {"x": 1}})"),
            "stream_options.x: unknown parameter");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "frobnicate": 1})"),
            "frobnicate: unknown parameter (not supported by this server)");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "messages": []})"),
            "messages: unknown parameter (not supported by this server)");
  EXPECT_EQ(CompletionError(R"({"prompt": "x", "min_tokens": 3})"), "min_tokens: 3 must be in [0, 0]");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})"),
            "tools: tool calling is not supported");
  EXPECT_EQ(ChatError(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})"),
            "response_format: only {\"type\": \"text\"} is supported");
  // The neutral values are accepted.
  EXPECT_TRUE(ParseChatRequest(R"({"messages": [{"role": "user", "content": "x"}], "tools": [], "tool_choice": "none",
                                   "response_format": {"type": "text"}, "store": false, "metadata": {}})")
                  .ok());
}

TEST(OpenAiRequestTest, ErrorParamMapsTheValidatorsNames) {
  EXPECT_EQ(ErrorParam("sampling.top_p: 1.5 must be in (0, 1]"), "top_p");
  EXPECT_EQ(ErrorMessage("sampling.top_p: 1.5 must be in (0, 1]"), "top_p: 1.5 must be in (0, 1]");
  EXPECT_EQ(ErrorParam("prompt_token_ids[3]: 99999 is outside the vocabulary of 2048"), "prompt");
  EXPECT_EQ(ErrorParam("messages[0].role: must be a non-empty string"), "messages[0].role");
  EXPECT_EQ(ErrorParam("body: not valid JSON"), "");
  EXPECT_EQ(ErrorParam("the server is shutting down"), "");
  EXPECT_EQ(ErrorParam("JSON nested deeper than 32 levels at byte 32"), "");
}

}  // namespace
}  // namespace tandem::openai
