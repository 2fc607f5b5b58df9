// Fuzz target: the router's request validation. Input: a serialized
// tandem.v1.GenerateRequest, parsed with protobuf, then
// RequestValidator::Validate against the bundled model's config and
// tokenizer.
// Asserts: no crash or exception; refusals are InvalidArgument naming a
// field; an accepted request has a non-empty id of at most 256 bytes, a
// non-empty prompt whose ids lie in [0, vocab_size), sampling that passes
// SamplingParams::Validate with max_tokens >= 1, stop token ids inside the
// vocabulary, at most 16 non-empty stop strings, and prompt + max_tokens
// within the model's context.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "engine/model/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "fuzz/fuzz_util.h"
#include "router/request_validator.h"
#include "tandem/v1/generation.pb.h"

namespace {

struct Model {
  tandem::ModelConfig config;
  std::unique_ptr<tandem::Tokenizer> tokenizer;
};

const Model& Bundled() {
  static const Model* model = [] {
    auto* m = new Model;
    auto config = tandem::LoadModelConfig(tandem::fuzz::BundledModelDir());
    FUZZ_CHECK(config.ok(), config.status().ToString());
    m->config = *config;
    auto tok = tandem::Tokenizer::Load(tandem::fuzz::BundledModelDir());
    FUZZ_CHECK(tok.ok(), tok.status().ToString());
    m->tokenizer = *std::move(tok);
    return m;
  }();
  return *model;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Model& model = Bundled();
  tandem::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const tandem::RequestValidator validator(model.config, model.tokenizer.get());
  absl::StatusOr<tandem::ValidatedRequest> v = validator.Validate(request, "fallback-id");
  if (!v.ok()) {
    FUZZ_CHECK(absl::IsInvalidArgument(v.status()) && !v.status().message().empty(), v.status().ToString());
    return 0;
  }
  const int64_t vocab = model.config.vocab_size;
  FUZZ_CHECK(!v->request_id.empty() && v->request_id.size() <= 256, "request id");
  FUZZ_CHECK(!v->prompt_token_ids.empty(), "empty prompt accepted");
  for (int32_t id : v->prompt_token_ids) FUZZ_CHECK(id >= 0 && id < vocab, "prompt id outside the vocabulary");
  FUZZ_CHECK(v->sampling.Validate().ok(), v->sampling.Validate().ToString());
  FUZZ_CHECK(v->sampling.max_tokens >= 1, "max_tokens 0");
  for (int32_t id : v->sampling.stop_token_ids) FUZZ_CHECK(id >= 0 && id < vocab, "stop id outside the vocabulary");
  FUZZ_CHECK(v->stop.size() <= tandem::RequestValidator::kMaxStopStrings, "too many stop strings");
  for (const std::string& s : v->stop) FUZZ_CHECK(!s.empty(), "empty stop string");
  FUZZ_CHECK(static_cast<int64_t>(v->prompt_token_ids.size()) + v->sampling.max_tokens <=
                 model.config.max_position_embeddings, "past the context");
  return 0;
}
