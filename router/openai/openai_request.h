// The OpenAI API's request bodies (/v1/completions, /v1/chat/completions)
// read into Tandem's own request, before any work: JSON syntax and types,
// the OpenAI-only options (n, echo, stream, logprobs shapes, chat messages),
// and the sampling fields copied into a tandem.v1.GenerateRequest, which the
// router's one RequestValidator then checks like any gRPC request (ranges,
// vocabulary, context length).
//
// Parameters this server does not implement are refused by name (400), never
// dropped: a caller who sets logit_bias or tools must not get an answer that
// silently ignored them. Fields that change nothing here (user, metadata,
// store, ...) are accepted. Unknown fields are refused too, as the gRPC API
// refuses unknown proto fields.
//
// Thread-safety: pure functions over their arguments.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "tandem/v1/generation.pb.h"

namespace tandem::openai {

using Json = nlohmann::ordered_json;

// One prompt of a completions request: text, or token ids.
struct Prompt {
  std::string text;
  std::vector<uint32_t> token_ids;  // used when `text` is empty
};

struct ParsedRequest {
  std::string model;  // as sent; "" when absent
  // completions: one entry per prompt (a string, token ids, or a list of
  // either); chat: empty (the messages make the one prompt).
  std::vector<Prompt> prompts;
  Json messages;  // chat only: the array as sent, content parts joined into strings
  bool add_generation_prompt = true;  // chat only
  // The sampling fields, in the gRPC API's terms. max_tokens 0 = absent (the
  // endpoint's default applies: 16 for completions, the rest of the context
  // for chat). `logprobs` is set to the top-n count asked for (at least 1
  // whenever any logprobs were asked for: the engine returns the chosen
  // token's logprob alongside its top list).
  v1::SamplingParams sampling;
  int32_t priority = 0;  // vLLM's extra `priority`
  uint32_t n = 1;        // choices per prompt
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions: the prompt's text before each choice's
  // Logprobs in the response: nullopt = none; else how many top alternatives
  // each token lists (completions: logprobs = k; chat: logprobs = true with
  // top_logprobs = k).
  std::optional<uint32_t> top_logprobs;
};

// Most prompts x n a request may ask for (each is one engine request).
inline constexpr uint32_t kMaxChoices = 64;

// InvalidArgument whose message starts with the offending parameter's name
// ("top_p: ...", "messages[2].role: ..."), for the error's `param`.
absl::StatusOr<ParsedRequest> ParseCompletionRequest(std::string_view body);
absl::StatusOr<ParsedRequest> ParseChatRequest(std::string_view body);

// The parameter a ParseXxx or validator error names: the text before the
// first ": " when it looks like a parameter name, else "". The validator's
// gRPC names (sampling.top_p, prompt_token_ids[3]) map to the OpenAI ones
// (top_p, prompt).
std::string ErrorParam(absl::string_view message);
// The message with the validator's gRPC names replaced by the OpenAI ones.
std::string ErrorMessage(absl::string_view message);

}  // namespace tandem::openai
